"""CAL, contribution-guided asymmetric learning (Xu, Kou, Wu, Liu, arXiv 2510.26289). [I]

The paper's method section is not public; this is our interpretation (docs/methods.md).

Per training step, on the current batch:

1. ``I(m)``: exact Shapley value of modality m in the game ``v(S) = −CE(z_S, y)``, where
   ``z_S`` is the fused output with the modalities outside S absent (zero input, or the
   training-set mean input with ``absent=mean``); 2^M no-grad forwards
   (:func:`modalscope.diagnostics.contribution.shapley_values`).
2. ``D(m) = mean_i p_m,i[y_i]``, optionally times the potential ``1 + ReLU(ΔL_m)`` where
   ``ΔL_m`` is the step-to-step decrease of an EMA of the unimodal loss.
3. ``W^m = softmax_m(Î(m)·D(m)/T)`` with ``Î(m) = I(m) / Σ_k |I(k)|`` (``info_norm=sum``:
   each modality's signed share of the total information, so a modality that brings 3× the
   information of the other gets 3× its Î; min-max scaling would map any two modalities to
   {0, 1} and lose that magnitude), smoothed by an EMA (``w_momentum``).
4. After backward, every gradient of modality m's encoder (and of its bottleneck) is
   multiplied by ``1 + κ·W^m`` ≥ 1: high-contribution modalities are accelerated, none is
   slowed down. Then the total gradient norm is clipped at ``clip``.
5. Asymmetric information bottleneck between encoder and fusion: ``u_m ~ N(μ_m(h_m),
   diag σ_m²(h_m))`` (reparameterised while training, ``u_m = μ_m`` at evaluation and in the
   no-grad Shapley passes), with ``L_AIB = Σ_m β0·(1 − W^m)·KL(q(u_m|x) ‖ N(0, I))``: a
   low-contribution (often noisy) modality is compressed more. ``μ_m`` starts as the
   identity and ``log σ_m²`` at ``init_logvar``, so training starts from the plain model.

Loss: ``L = CE(z, y) + Σ_m CE(z_m, y) + L_AIB``. The bottleneck layers are the method's
``extra_modules()`` (they join the optimiser and the checkpoint) and are attached through the
model's ``feature_hook``.

Cost per step: one forward/backward plus 2^M no-grad forwards every ``contrib_every``
steps (4 for two modalities, 8 for three); the bottleneck adds two d×d linear layers per
modality.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from modalscope.diagnostics.contribution import confidence, contribution_weights, shapley_values, subset_value_fn
from modalscope.diagnostics.robustness import feature_moments
from modalscope.errors import ConfigError
from modalscope.methods.base import LossParts, Method, MethodParams, Panel, register_method, task_loss
from modalscope.methods.purify import supervised_losses


class CalParams(MethodParams):
    name: Literal["cal"] = "cal"
    kappa: float = Field(1.0, ge=0.0, le=100.0, description="Acceleration strength: encoder m's gradient × (1 + κ·W^m).")
    temperature: float = Field(1.0, gt=0.0, le=1000.0, description="Softmax temperature T of W^m.")
    info_norm: Literal["sum", "minmax"] = Field(
        "sum", description="Î = I / Σ_k |I(k)| (keeps each modality's share of the information) or min-max to [0, 1] (two modalities: always {0, 1})."
    )
    w_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="EMA momentum of W^m across steps.")
    absent: Literal["zero", "mean"] = Field("zero", description="Input of an absent modality in the Shapley game.")
    potential: bool = Field(False, description="Multiply D(m) by 1 + ReLU(decrease of the EMA unimodal loss).")
    loss_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="EMA momentum of the unimodal loss (potential term).")
    contrib_every: int = Field(1, ge=1, le=100000, description="Steps between Shapley evaluations (W is reused between).")
    bottleneck: bool = Field(True, description="Use the asymmetric information bottleneck.")
    beta0: float = Field(1e-3, ge=0.0, le=100.0, description="KL weight scale: β_m = β0·(1 − W^m).")
    init_logvar: float = Field(-5.0, ge=-20.0, le=5.0, description="Initial log σ² of the bottleneck.")
    clip: float = Field(5.0, ge=0.0, le=1e6, description="Clip the total gradient norm after acceleration (0 = off).")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_d (μ² + σ² − 1 − log σ²)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


class InfoBottleneck(nn.Module):
    """One reparameterised Gaussian layer per modality; output has the feature's dimension."""

    def __init__(self, modalities: list[str], dim: int, init_logvar: float = -5.0):
        super().__init__()
        self.mu = nn.ModuleDict({m: nn.Linear(dim, dim) for m in modalities})
        self.logvar = nn.ModuleDict({m: nn.Linear(dim, dim) for m in modalities})
        with torch.no_grad():
            for m in modalities:
                self.mu[m].weight.copy_(torch.eye(dim))
                self.mu[m].bias.zero_()
                self.logvar[m].weight.zero_()
                self.logvar[m].bias.fill_(init_logvar)

    def forward(self, feats: dict[str, torch.Tensor], sample: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(u per modality, mean KL per modality); modalities without a layer pass through."""
        out, kl = {}, {}
        for m, h in feats.items():
            if m not in self.mu:
                out[m] = h
                continue
            mu, logvar = self.mu[m](h), self.logvar[m](h).clamp(-20.0, 10.0)
            out[m] = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if sample else mu
            kl[m] = gaussian_kl(mu, logvar).mean()
        return out, kl


def acceleration_factors(w: dict[str, float], kappa: float) -> dict[str, float]:
    """``a_m = 1 + κ·W^m``: ≥ 1 for κ ≥ 0, W ≥ 0, and ordered like W."""
    return {m: 1.0 + kappa * float(v) for m, v in w.items()}


def scale_gradients(groups: dict[str, list[nn.Parameter]], factors: dict[str, float]) -> None:
    """Multiply the gradient of every parameter in ``groups[m]`` by ``factors[m]`` in place."""
    for m, params in groups.items():
        a = factors.get(m, 1.0)
        grads = [p.grad for p in params if p.grad is not None]
        if grads and a != 1.0:
            torch._foreach_mul_(grads, a)


@register_method("cal")
class Cal(Method):
    """Contribution-guided acceleration + asymmetric information bottleneck (module doc)."""

    panels = (
        Panel("Contribution weight Wᵐ", ("cal/w/*",), "Wᵐ (sums to 1)",
              "The modality that contributes more to the fused prediction gets the larger weight.", (0.0, 1.0), 0.5, "even (two modalities)"),
        Panel("Acceleration factor 1 + κ·Wᵐ", ("cal/accel/*",), "gradient multiplier (1 = untouched)",
              "Every encoder's gradient is multiplied by this; high contributors are sped up, nobody is slowed.", None, 1.0, "untouched"),
        Panel("Information-bottleneck KL per modality", ("cal/kl/*",), "KL (nats)",
              "Low-contribution modalities are compressed harder; a large KL means the code still carries much information.",
              log_y=True),
    )

    Params = CalParams
    family = "contribution"
    min_modalities = 2

    @classmethod
    def unimodal_heads(cls, params) -> str:
        return "trained"

    def __init__(self, params, modalities, task):
        super().__init__(params, modalities, task)
        n = len(self.modalities)
        self.w = {m: 1.0 / n for m in self.modalities}
        self.w_init = False
        self.loss_ema: dict[str, float] = {}
        self.aib: InfoBottleneck | None = None
        self._kl: dict[str, torch.Tensor] = {}
        self._fill = None
        self._trainer = None
        self._steps = 0

    def setup(self, trainer) -> None:
        self._trainer = trainer
        model = trainer.model
        if self.params.bottleneck:
            dims = {getattr(model.encoders[m], "out_dim", trainer.cfg.model.embed_dim) for m in self.modalities}
            if len(dims) != 1:
                raise ConfigError(f"method 'cal': the bottleneck needs one feature size for every encoder, got {sorted(dims)}")
            dim = dims.pop()
            self.aib = InfoBottleneck(self.modalities, dim, self.params.init_logvar)

            def hook(feats):
                u, self._kl = self.aib(feats, sample=model.training and torch.is_grad_enabled())
                return u

            model.feature_hook = hook

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"aib": self.aib} if self.aib is not None else {}

    def forward(self, model, batch, ctx):
        self._kl = {}
        out = model(batch)
        for m, v in self._kl.items():
            out.extras[f"kl/{m}"] = v
        return out

    # ------------------------------------------------------------------ contribution
    def _fill_values(self, ctx):
        if self.params.absent != "mean":
            return None
        if self._fill is None:
            mom = feature_moments(ctx.trainer.bundle.splits["train"], self.modalities)
            self._fill = {m: mom[m][0].to(ctx.device) for m in self.modalities}
        return self._fill

    def _update_contribution(self, batch, out, ctx) -> None:
        y = batch["label"]
        value = subset_value_fn(ctx.model, batch, y, self.task, self.params.absent, self._fill_values(ctx))
        info = shapley_values(value, self.modalities)
        conf = {m: confidence(out.logits[m].detach(), y, self.task) for m in self.modalities}
        if self.params.potential:
            for m in self.modalities:
                lm = float(task_loss(out.logits[m].detach(), y, self.task))
                prev = self.loss_ema.get(m, lm)
                new = self.params.loss_momentum * prev + (1 - self.params.loss_momentum) * lm
                self.loss_ema[m] = new
                conf[m] = conf[m] * (1.0 + max(prev - new, 0.0))
        w_new = contribution_weights(info, conf, self.params.temperature, self.params.info_norm)
        mu = self.params.w_momentum if self.w_init else 0.0
        self.w = {m: mu * self.w[m] + (1 - mu) * w_new[m] for m in self.modalities}
        self.w_init = True
        for m in self.modalities:
            ctx.log(f"cal/info/{m}", info[m])
            ctx.log(f"cal/conf/{m}", conf[m])

    # ------------------------------------------------------------------ hooks
    def loss(self, batch, out, ctx) -> LossParts:
        if self._steps % self.params.contrib_every == 0:
            self._update_contribution(batch, out, ctx)
        self._steps += 1
        base = supervised_losses(self, batch, out, ctx)
        total, parts = base.total, base.parts
        if self.aib is not None:
            aib = 0.0
            for m in self.modalities:
                kl = out.extras[f"kl/{m}"]
                aib = aib + self.params.beta0 * (1.0 - self.w[m]) * kl
                ctx.log(f"cal/kl/{m}", float(kl.detach()))
            total = total + aib
            parts["aib"] = aib.detach()
        for m in self.modalities:
            ctx.log(f"cal/w/{m}", self.w[m])
        return LossParts(total=total, parts=parts)

    def _groups(self, ctx) -> dict[str, list[nn.Parameter]]:
        groups = {m: list(ctx.model.encoder_params(m)) for m in self.modalities}
        if self.aib is not None:
            for m in self.modalities:
                groups[m] += list(self.aib.mu[m].parameters()) + list(self.aib.logvar[m].parameters())
        return groups

    def after_backward(self, ctx) -> None:
        factors = acceleration_factors(self.w, self.params.kappa)
        scale_gradients(self._groups(ctx), factors)
        for m, a in factors.items():
            ctx.log(f"cal/accel/{m}", a)
        if self.params.clip > 0:
            torch.nn.utils.clip_grad_norm_(ctx.trainer.parameters(), self.params.clip)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "w": torch.tensor([self.w[m] for m in self.modalities], dtype=torch.float64),
            "w_init": self.w_init,
            "loss_ema": {m: float(v) for m, v in self.loss_ema.items()},
            "steps": self._steps,
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        w = state["w"].tolist()
        self.w = dict(zip(self.modalities, w))
        self.w_init = bool(state["w_init"])
        self.loss_ema = dict(state.get("loss_ema", {}))
        self._steps = int(state.get("steps", 0))
