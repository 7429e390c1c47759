"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from modalscope.errors import ConfigError
from modalscope.methods.base import LossParts, Method, Panel, register_method
from modalscope.methods.window import WindowParams, joint_loss


class OGMGEParams(WindowParams):
    name: Literal["ogm_ge"] = "ogm_ge"
    alpha: float = Field(0.3, ge=0.0, le=10.0, description="Modulation strength α in k = 1 − tanh(α·ρ) (BalanceMM 0.3, official README 0.1).")
    ge: bool = Field(True, description="Generalisation enhancement: add N(0, std(grad)²) noise to every modulated encoder tensor (OGM-GE); off = plain OGM.")
    multi_ratio: Literal["min", "mean"] = Field(
        "min", description="Three or more modalities: ρ_m = s_m / min_{k≠m} s_k (min) or the mean of s_m / s_k over k≠m (mean, 'OGM_GE3'). Identical for two modalities."
    )
    tensors: Literal["weights", "all"] = Field(
        "weights", description="Which encoder tensors are modulated: weights = every tensor with ≥ 2 dims (BalanceMM, skips biases/norms); all = every tensor."
    )


def ogm_scores(logits: dict[str, torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s_m = Σ_i softmax(z_m,i)[y_i]`` (summed true-class probability over the batch)."""
    return {m: torch.softmax(z.detach().float(), dim=1).gather(1, y.view(-1, 1)).sum() for m, z in logits.items()}


def ogm_ratios(scores: dict[str, float], multi: str = "min") -> dict[str, float]:
    """``ρ_m``: s_m over the other modality's score (two modalities), generalised by ``multi``."""
    out = {}
    for m, s in scores.items():
        others = [v for k, v in scores.items() if k != m]
        if multi == "min":
            ref = min(others)
            out[m] = s / ref if ref > 0 else math.inf
        else:
            out[m] = sum((s / v if v > 0 else math.inf) for v in others) / len(others)
    return out


def ogm_coefficients(ratios: dict[str, float], alpha: float) -> dict[str, float]:
    """``k_m = 1 − tanh(α·ρ_m)`` when ρ_m > 1 (the dominant modality), else 1; clamped at ≥ 0."""
    return {m: max(0.0, 1.0 - math.tanh(alpha * r)) if r > 1 else 1.0 for m, r in ratios.items()}


def ge_noise(grad: torch.Tensor) -> torch.Tensor:
    """``N(0, (std(grad) + 1e-8)²)`` noise shaped like ``grad``, drawn before ``grad`` is scaled.

    The standard deviation stays a device tensor (the draw is ``N(0, 1)`` scaled on the
    device): no host sync per tensor, which on a GPU would stall every step. Same RNG draws
    as ``normal_(0, std)``; equal to it up to float rounding (``tests/test_method_ogm_ge.py``).
    """
    z = torch.zeros_like(grad).normal_(0.0, 1.0)
    if grad.numel() > 1:
        return z.mul_(grad.std() + 1e-8)
    return z.mul_(1e-8)


def modulate_(groups: dict, logits: dict[str, torch.Tensor], labels: torch.Tensor, alpha: float, ge: bool,
              multi_ratio: str, tensors: str) -> dict[str, float]:
    """The OGM-GE update on ``.grad`` in place, for ``groups`` (modality → encoder parameters):
    ``g ← k_m·g (+ GE noise)`` per modulated tensor. Shared by :class:`OGMGE` and the one-call
    form for user loops (:func:`modalscope.methods.grad_edit.ogm_ge_`); returns the ``ogm/*`` scalars."""
    mods = list(groups)
    scores = {m: float(v) for m, v in ogm_scores({m: logits[m] for m in mods}, labels.long()).items()}
    ratios = ogm_ratios(scores, multi_ratio)
    coeffs = ogm_coefficients(ratios, alpha)
    for m in mods:
        k = coeffs[m]
        for p in groups[m]:
            if p.grad is None or (tensors == "weights" and p.dim() < 2):
                continue
            if ge:
                noise = ge_noise(p.grad)
                p.grad.mul_(k).add_(noise)
            elif k != 1.0:
                p.grad.mul_(k)
    logs: dict[str, float] = {}
    for m in mods:
        logs[f"ogm/score/{m}"] = scores[m]
        logs[f"ogm/coeff/{m}"] = coeffs[m]
    if len(mods) == 2:
        a, b = mods
        logs["ogm/ratio"] = scores[a] / scores[b] if scores[b] > 0 else 1e6
    else:
        for m in mods:
            logs[f"ogm/ratio/{m}"] = min(ratios[m], 1e6)
    return logs


def score_logits(out) -> dict[str, torch.Tensor]:
    """The logits OGM-GE scores: the fusion-layer slices when the fusion has them."""
    return out.slices if out.slices else out.logits


@register_method("ogm_ge")
class OGMGE(Method):
    """OGM-GE: slow down the dominant modality's encoder, then add gradient noise.

    Loss: ``L = CE(z, y)`` on the fused logits only. After ``L.backward()``, per step:

    * ``s_m = Σ_i softmax(z_m,i)[y_i]`` with ``z_m`` the slices of the concat fusion layer,
      ``z_m = h_m W_mᵀ + b/M`` (bias split evenly), as the official code does, *whatever*
      ``model.heads`` is: separate heads are trained by no loss of OGM-GE, so scores read from
      them would follow noise. Only a fusion without slices (gated) falls back to the model's
      per-modality logits (its monitor heads, trained on detached features);
    * ``ρ_m = s_m / s_k`` for two modalities; for M ≥ 3 ``ρ_m = s_m / min_{k≠m} s_k``
      (``multi_ratio=min``) or ``mean_{k≠m} s_m/s_k`` (``mean``);
    * ``k_m = 1 − tanh(α·ρ_m)`` if ``ρ_m > 1`` else ``1`` (clamped ≥ 0);
    * for every modulated tensor of encoder m: ``g ← k_m·g + N(0, (std(g)+1e-8)²)`` with the
      std of the *unmodulated* gradient, per tensor, on every encoder (OGM-GE); ``g ← k_m·g``
      with ``ge=false`` (plain OGM).

    Logged: ``ogm/score/<m>``, ``ogm/coeff/<m>``, ``ogm/ratio`` (s of the first modality over
    the second, i.e. audio/visual, for two modalities) or ``ogm/ratio/<m>`` for M ≥ 3.
    Outside ``[start_epoch, end_epoch)`` the step is exactly ``joint``.
    """

    panels = (
        Panel("Modulation coefficient kₘ per encoder", ("ogm/coeff/*",), "kₘ (1 = gradient untouched)",
              "The dominant modality's gradient is multiplied by kₘ < 1; the weaker one keeps 1.", (0.0, 1.05), 1.0, "untouched"),
        Panel("Score ratio ρ (first modality over second)", ("ogm/ratio", "ogm/ratio/*"), "ρ (1 = both equally confident)",
              "Above 1 the first modality is more confident on the true class and gets slowed down.", None, 1.0, "balanced", log_y=True,
              labels=(("ogm/ratio", "ρ"),)),
        Panel("Confidence score sₘ per modality", ("ogm/score/*",), "Σ true-class probability over the batch",
              "The raw scores behind ρ: the modality with the larger score is the dominant one."),
    )

    Params = OGMGEParams
    family = "gradient"

    @classmethod
    def unimodal_heads(cls, params) -> str:
        return "slice"

    @classmethod
    def check_config(cls, params, modalities, task) -> None:
        super().check_config(params, modalities, task)
        if len(modalities) < 2:
            raise ConfigError("method 'ogm_ge' needs at least 2 modalities (it compares their scores)")
        if task != "classification":
            raise ConfigError("method 'ogm_ge' needs a classification task (its score is a softmax probability)")

    def loss(self, batch, out, ctx) -> LossParts:
        return joint_loss(batch, out, self.task)

    def after_backward(self, ctx) -> None:
        if not self.params.active(ctx.epoch) or ctx.out is None:
            return
        groups = ctx.model.param_groups()
        p = self.params
        logs = modulate_({m: groups[f"encoder/{m}"] for m in self.modalities}, score_logits(ctx.out), ctx.batch["label"],
                         p.alpha, p.ge, p.multi_ratio, p.tensors)
        for name, value in logs.items():
            ctx.log(name, value)
