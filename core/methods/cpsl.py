"""CPSL: conflict-aware multiplicative penalty + statistical loss (after Dai, Liang, Mai, arXiv 2605.28575).

The paper's exact CP and SL formulas were not readable; this module implements the
interpretation written down in ``docs/methods.md`` (every knob exposed).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from modalscope.errors import ConfigError
from modalscope.methods.base import fused_and_unimodal, LossParts, Method, Panel, register_method
from modalscope.methods.window import WindowParams, joint_loss


class CPSLParams(WindowParams):
    name: Literal["cpsl"] = "cpsl"
    tau: float = Field(2.0, ge=1.0, le=1000.0, description="Conflict threshold τ on the dominance ratio r = n_d / mean_{k≠d} n_k.")
    lambda_max: float = Field(0.5, ge=0.0, le=100.0, description="Penalty strength λ_max; λ_cp = λ_max·ramp(epoch).")
    warmup_epochs: int = Field(3, ge=0, le=100000, description="Epochs E_w of the linear ramp of λ_cp from 0 to λ_max (0 = no ramp).")
    penalty: Literal["inverse", "exp"] = Field("inverse", description="c = 1/(1+λ_cp(r−τ)) (inverse) or exp(−λ_cp(r−τ)) (exp).")
    sl_weight: float = Field(0.1, ge=0.0, le=100.0, description="Weight λ_SL of the statistical loss.")
    sl_stats: Literal["batch", "running"] = Field(
        "batch", description="Label statistics the predictions are matched to: this batch's, or an EMA over batches."
    )
    sl_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="EMA momentum of the running label statistics (sl_stats=running).")
    aux_weight: float = Field(1.0, ge=0.0, le=100.0, description="Weight of the unimodal auxiliary losses Σ_m L(z_m, y).")
    ratio_source: Literal["features", "encoder_rms", "encoder"] = Field(
        "features",
        description="What n_m measures: ‖∂L/∂h_m‖ at modality m's fusion input (scale-free), the per-parameter RMS of encoder m's gradient, or its raw norm.",
    )


def label_stats(y: torch.Tensor, task: str, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean and std (population) of the targets: one-hot class frequencies, or the values."""
    if task == "regression":
        t = y.reshape(-1).float()
    else:
        t = torch.nn.functional.one_hot(y, n_classes).float()
    return t.mean(0), t.std(0, unbiased=False)


def stat_loss(pred: torch.Tensor, target_mean: torch.Tensor, target_std: torch.Tensor, task: str) -> torch.Tensor:
    """``Σ_k (mean_B(q_k) − μ_k)² + (std_B(q_k) − σ_k)²``.

    Classification: ``q = softmax(z)`` (K columns) against the one-hot label mean (class
    frequencies) and std ``√(f_k(1−f_k))``; regression: ``q = ŷ`` (one column) against the
    label mean and std. Stds are population stds over the batch.
    """
    q = pred.reshape(-1, 1).float() if task == "regression" else torch.softmax(pred.float(), dim=1)
    mean, std = q.mean(0), q.std(0, unbiased=False)
    return ((mean - target_mean.reshape(mean.shape)) ** 2).sum() + ((std - target_std.reshape(std.shape)) ** 2).sum()


def gradient_magnitudes(source: str, features: dict[str, torch.Tensor], encoders: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """``n_m`` per modality, from the gradients already computed by ``L.backward()``.

    * ``features``: ``‖∂L/∂h_m‖₂`` over the batch, the gradient arriving at modality m's input of
      the fusion layer (and of its auxiliary head). It depends only on what h_m is and how the
      heads use it, not on how many parameters the encoder has or how its input is scaled: a
      reparametrisation of the encoder that leaves h_m unchanged leaves n_m unchanged;
    * ``encoder_rms``: ``‖∇_{θ_m} L‖₂ / √|θ_m|``, free of the parameter count only;
    * ``encoder``: ``‖∇_{θ_m} L‖₂`` (depends on parameter count and input scale).
    """
    out = {}
    for m, params in encoders.items():
        if source == "features":
            h = features.get(m)
            g = None if h is None else h.grad
            out[m] = 0.0 if g is None else float(torch.linalg.vector_norm(g.double()))
        else:
            grads = [p.grad for p in params if p.grad is not None]
            sq = sum(float(g.double().pow(2).sum()) for g in grads)
            n = sum(p.numel() for p in params) if source == "encoder_rms" else 1
            out[m] = (sq / max(n, 1)) ** 0.5
    return out


def dominance_ratio(norms: dict[str, float]) -> tuple[str, float]:
    """``d = argmax_m n_m``, ``r = n_d / mean_{k≠d} n_k``."""
    d = max(norms, key=lambda m: norms[m])
    rest = [v for m, v in norms.items() if m != d]
    mean = sum(rest) / len(rest)
    return d, (norms[d] / mean if mean > 0 else math.inf)


def penalty_coefficient(r: float, tau: float, lam: float, kind: str = "inverse") -> float:
    """``c = 1/(1 + λ(r−τ))`` (or ``exp(−λ(r−τ))``) when ``r > τ``, else 1."""
    if not r > tau or lam <= 0:
        return 1.0
    if math.isinf(r):
        return 0.0
    x = lam * (r - tau)
    return 1.0 / (1.0 + x) if kind == "inverse" else math.exp(-x)


def ramp(epoch: int, start: int, warmup: int) -> float:
    """Linear ramp ``min(1, (epoch − start)/E_w)``: 0 in the first active epoch, 1 from epoch start+E_w."""
    if warmup <= 0:
        return 1.0
    return min(1.0, max(0.0, (epoch - start) / warmup))


@register_method("cpsl")
class CPSL(Method):
    """Conflict-aware Penalty (CP) + Statistical Loss (SL) — our interpretation.

    Loss: ``L = L(z, y) + a·Σ_m L(z_m, y) + λ_SL·L_SL`` with ``L`` = CE (classification) or L1
    (regression), ``a = aux_weight`` and

        ``L_SL = Σ_k (mean_B(q_k) − μ_k)² + (std_B(q_k) − σ_k)²``

    where ``q = softmax(z)`` and ``(μ, σ)`` are the class frequencies of the batch labels and
    their std ``√(f(1−f))`` (classification), or ``q = ŷ`` and ``(μ, σ)`` the label mean/std
    (regression). ``sl_stats=running`` replaces ``(μ, σ)`` by an EMA over batches
    (``μ ← m·μ + (1−m)·μ_batch``, same for σ; first batch initialises).

    The auxiliary losses act on a separate linear head per modality (``model.heads=trained``,
    chosen automatically), as the paper's "unimodal auxiliary heads".

    After ``L.backward()``: ``n_m = ‖∂L/∂h_m‖₂``, the gradient at modality m's fusion input
    (``ratio_source=features``; scale-free, see :func:`gradient_magnitudes`), ``d = argmax n_m``,
    ``r = n_d / mean_{k≠d} n_k``. If ``r > τ``: ``θ_d.grad ← c·θ_d.grad`` with
    ``c = 1/(1 + λ_cp(r − τ))`` (``penalty=exp``: ``exp(−λ_cp(r−τ))``),
    ``λ_cp = λ_max·min(1, (epoch − start_epoch)/E_w)``. The whole gradient of θ_d, SL part
    included, is scaled ("protect SL" by scaling). Logged: ``cpsl/ratio``, ``cpsl/conflict``,
    ``cpsl/penalty`` (c, 1 when no conflict), ``cpsl/lambda``, ``cpsl/stat_loss``,
    ``cpsl/std_ratio`` (mean pred std / mean label std), ``cpsl/share/<m>``.
    Outside ``[start_epoch, end_epoch)`` the step is exactly ``joint``.
    """

    panels = (
        Panel("Gradient share per encoder", ("cpsl/share/*",), "share of ‖g‖ (1/M = even)",
              "The encoder with the larger share dominates; the penalty shrinks its gradient when the ratio passes τ.", (0.0, 1.0)),
        Panel("Dominance ratio r", ("cpsl/ratio",), "‖g_dominant‖ / mean ‖g_other‖",
              "Above τ the step is a conflict and the dominant encoder's gradient is scaled down.", None, 1.0, "even", log_y=True),
        Panel("Penalty c on the dominant encoder", ("cpsl/penalty", "cpsl/lambda"), "multiplier / strength",
              "c = 1 leaves the gradient untouched; λ ramps the penalty's strength up over the warm-up.", (0.0, 1.05), 1.0, "untouched",
              labels=(("cpsl/penalty", "penalty c"), ("cpsl/lambda", "strength λ"))),
        Panel("Statistical loss", ("cpsl/stat_loss", "cpsl/std_ratio"), "value",
              "How far the predictions' per-class mean and spread are from the labels'; the std ratio should approach 1.",
              None, 1.0, "std ratio 1", labels=(("cpsl/stat_loss", "statistical loss"), ("cpsl/std_ratio", "pred std / label std"))),
    )

    Params = CPSLParams
    family = "gradient"

    @classmethod
    def unimodal_heads(cls, params) -> str | None:
        return "trained" if params.aux_weight > 0 else None

    def __init__(self, params, modalities, task):
        super().__init__(params, modalities, task)
        self.run_mean: torch.Tensor | None = None
        self.run_std: torch.Tensor | None = None

    @classmethod
    def check_config(cls, params, modalities, task) -> None:
        super().check_config(params, modalities, task)
        if len(modalities) < 2:
            raise ConfigError("method 'cpsl' needs at least 2 modalities (it compares their gradient norms)")

    def _targets(self, y: torch.Tensor, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = label_stats(y, self.task, n_out)
        if self.params.sl_stats == "batch":
            return mean, std
        if self.run_mean is None:
            self.run_mean, self.run_std = mean.detach().cpu(), std.detach().cpu()
        else:
            mom = self.params.sl_momentum
            self.run_mean = mom * self.run_mean + (1 - mom) * mean.detach().cpu()
            self.run_std = mom * self.run_std + (1 - mom) * std.detach().cpu()
        return self.run_mean.to(y.device), self.run_std.to(y.device)

    def loss(self, batch, out, ctx) -> LossParts:
        if not self.params.active(ctx.epoch):
            return joint_loss(batch, out, self.task)
        y = batch["label"]
        if self.params.ratio_source == "features":
            for h in out.features.values():
                if h.requires_grad:
                    h.retain_grad()
        base = fused_and_unimodal(out, y, self.task, self.params.aux_weight)
        total, parts = base.total, base.parts
        if self.params.sl_weight > 0:
            n_out = 1 if self.task == "regression" else out.fused.shape[1]
            mu, sigma = self._targets(y, n_out)
            sl = stat_loss(out.fused, mu, sigma, self.task)
            total = total + self.params.sl_weight * sl
            parts["stat"] = sl.detach()
            ctx.log("cpsl/stat_loss", float(sl.detach()))
            q = out.fused.detach().reshape(-1, 1).float() if self.task == "regression" else torch.softmax(out.fused.detach().float(), 1)
            ls = float(sigma.mean())
            ctx.log("cpsl/std_ratio", float(q.std(0, unbiased=False).mean()) / ls if ls > 0 else 0.0)
        return LossParts(total=total, parts=parts)

    def after_backward(self, ctx) -> None:
        if not self.params.active(ctx.epoch):
            return
        groups = ctx.model.param_groups()
        feats = ctx.out.features if ctx.out is not None else {}
        norms = gradient_magnitudes(self.params.ratio_source, feats, {m: groups[f"encoder/{m}"] for m in self.modalities})
        d, r = dominance_ratio(norms)
        lam = self.params.lambda_max * ramp(ctx.epoch, self.params.start_epoch, self.params.warmup_epochs)
        c = penalty_coefficient(r, self.params.tau, lam, self.params.penalty)
        if c != 1.0:
            for p in groups[f"encoder/{d}"]:
                if p.grad is not None:
                    p.grad.mul_(c)
        total = sum(norms.values())
        for m, v in norms.items():
            ctx.log(f"cpsl/share/{m}", v / total if total > 0 else 1.0 / len(norms))
        ctx.log("cpsl/ratio", min(r, 1e6))
        ctx.log("cpsl/conflict", float(r > self.params.tau))
        ctx.log("cpsl/penalty", c)
        ctx.log("cpsl/lambda", lam)

    def state_dict(self) -> dict:
        if self.run_mean is None:
            return {}
        return {"run_mean": self.run_mean.clone(), "run_std": self.run_std.clone()}

    def load_state_dict(self, state: dict) -> None:
        if "run_mean" in state:
            self.run_mean = state["run_mean"].float().cpu()
            self.run_std = state["run_std"].float().cpu()
