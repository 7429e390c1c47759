"""MMPareto: Pareto-integrate fused and unimodal gradients per encoder (Wei & Hu, ICML 2024)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from core.errors import ConfigError
from core.methods.base import fused_and_unimodal, LossParts, Method, Panel, register_method
from core.methods.window import WindowParams, joint_loss


class MMParetoParams(WindowParams):
    name: Literal["mmpareto"] = "mmpareto"
    alpha: float = Field(1.5, gt=0.0, le=10.0, description="Scale α of the integrated encoder gradient (paper: 1.5 on CREMA-D).")
    rescale: bool = Field(True, description="Rescale the integrated gradient up to ‖g_mm + g_m‖ when it is shorter (the paper's norm recovery).")


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x.double() * y.double()).sum() for x, y in zip(a, b))


def min_norm_weights(g1: list[torch.Tensor], g2: list[torch.Tensor]) -> tuple[float, float]:
    """Two-task MGDA: ``w1 = clip((g2−g1)·g2 / ‖g1−g2‖², 0, 1)``, ``w2 = 1 − w1``."""
    d11, d22, d12 = float(_dot(g1, g1)), float(_dot(g2, g2)), float(_dot(g1, g2))
    denom = d11 + d22 - 2.0 * d12
    if denom <= 0:
        return 0.5, 0.5
    w1 = min(1.0, max(0.0, (d22 - d12) / denom))
    return w1, 1.0 - w1


def pareto_combine(g_mm: list[torch.Tensor], g_uni: list[torch.Tensor], alpha: float, rescale: bool = True) -> tuple[list[torch.Tensor], dict[str, float]]:
    """MMPareto's gradient for one encoder from its fused (g_mm) and unimodal (g_uni) gradients.

    ``w = (½, ½)`` if ``cos(g_mm, g_uni) > 0`` else the MinNorm weights; ``ĝ = 2(w1 g_mm + w2 g_uni)``;
    if ``‖g_mm + g_uni‖ / ‖ĝ‖ > 1`` then ``ĝ ← ĝ·‖g_mm + g_uni‖/‖ĝ‖``; result ``α·ĝ``.
    """
    d11, d22, d12 = float(_dot(g_mm, g_mm)), float(_dot(g_uni, g_uni)), float(_dot(g_mm, g_uni))
    cos = d12 / (d11 * d22) ** 0.5 if d11 > 0 and d22 > 0 else 0.0
    if cos > 0:
        w1, w2 = 0.5, 0.5
    else:
        w1, w2 = min_norm_weights(g_mm, g_uni)
    g_hat = [2.0 * (w1 * a + w2 * b) for a, b in zip(g_mm, g_uni)]
    n_hat = max(w1 * w1 * d11 + w2 * w2 * d22 + 2 * w1 * w2 * d12, 0.0) ** 0.5 * 2.0
    n_sum = max(d11 + d22 + 2 * d12, 0.0) ** 0.5
    scale = 1.0
    if rescale and n_hat > 0 and n_sum / n_hat > 1.0:
        scale = n_sum / n_hat
    out = [alpha * scale * g for g in g_hat]
    return out, {"cos": cos, "w": w1, "conflict": float(cos <= 0), "rescale": scale}


@register_method("mmpareto")
class MMPareto(Method):
    """MMPareto: conflict-free integration of the multimodal and unimodal gradients.

    Loss: ``L = CE(z, y) + Σ_m CE(z_m, y)``. Per step, for each encoder θ_m, the two
    gradients ``g_mm = ∇_{θ_m} CE(z, y)`` and ``g_m = ∇_{θ_m} CE(z_m, y)`` (two extra
    autograd passes: ``z_k`` depends on θ_m only for k = m, so one pass of ``Σ_k CE(z_k)``
    yields every ``g_m`` at once). Then

    * ``w = (½, ½)`` if ``cos(g_mm, g_m) > 0``, else the MinNorm solution
      ``w1 = clip((g_m − g_mm)·g_m / ‖g_mm − g_m‖², 0, 1)``, ``w2 = 1 − w1``;
    * ``ĝ = 2(w1·g_mm + w2·g_m)``; if ``‖g_mm + g_m‖/‖ĝ‖ > 1`` rescale ĝ to ``‖g_mm + g_m‖``;
    * ``θ_m.grad ← α·ĝ``. Fusion layer and heads keep the plain gradient of L.

    Cosines and weights use the whole encoder (all its tensors flattened together).
    Logged: ``mmpareto/cos/<m>``, ``mmpareto/w/<m>`` (weight of g_mm), ``mmpareto/conflict/<m>``,
    ``mmpareto/rescale/<m>``. Outside ``[start_epoch, end_epoch)`` the step is exactly ``joint``.
    Cost: 3 backward passes per step for any M.
    """

    panels = (
        Panel("Cosine between the fused and the unimodal gradient", ("mmpareto/cos/*",), "cosine (−1 opposed … 1 aligned)",
              "Below 0 the two gradients conflict and MMPareto switches from the plain sum to the MinNorm mix.", (-1.05, 1.05), 0.0,
              "conflict below"),
        Panel("Weight of the fused gradient", ("mmpareto/w/*",), "w (0.5 = plain sum)",
              "0.5 without conflict; under conflict the weight moves toward whichever gradient keeps both losses falling.",
              (0.0, 1.0), 0.5, "plain sum"),
        Panel("Rescale factor", ("mmpareto/rescale/*",), "‖g_mm + g_m‖ / ‖ĝ‖",
              "How much the combined gradient is scaled back up to the plain sum's length.", None, 1.0, "none", log_y=True),
    )

    Params = MMParetoParams
    family = "gradient"

    def __init__(self, params, modalities, task):
        super().__init__(params, modalities, task)
        self._pending: dict[str, list[torch.Tensor]] | None = None

    @classmethod
    def check_config(cls, params, modalities, task) -> None:
        super().check_config(params, modalities, task)
        if len(modalities) < 2:
            raise ConfigError("method 'mmpareto' needs at least 2 modalities")

    def setup(self, trainer) -> None:
        if trainer.model.head_kind == "separate":
            raise ConfigError(
                "method 'mmpareto' needs unimodal logits that reach the encoders: use model.fusion=concat/sum or model.heads=trained"
            )

    def loss(self, batch, out, ctx) -> LossParts:
        if not self.params.active(ctx.epoch):
            return joint_loss(batch, out, self.task)
        return fused_and_unimodal(out, batch["label"], self.task, weight=1.0, keep_graph=True)

    def backward(self, parts, ctx) -> None:
        self._pending = None
        if not self.params.active(ctx.epoch):
            parts.total.backward()
            return
        groups = ctx.model.param_groups()
        enc = {m: [p for p in groups[f"encoder/{m}"] if p.requires_grad] for m in self.modalities}
        flat = [p for m in self.modalities for p in enc[m]]
        uni = sum(parts.parts[m] for m in self.modalities)
        g_mm = torch.autograd.grad(parts.parts["fused"], flat, retain_graph=True, allow_unused=True)
        g_uni = torch.autograd.grad(uni, flat, retain_graph=True, allow_unused=True)
        parts.total.backward()
        zero = lambda g, p: torch.zeros_like(p) if g is None else g  # noqa: E731
        self._pending = {}
        i = 0
        for m in self.modalities:
            n = len(enc[m])
            a = [zero(g, p) for g, p in zip(g_mm[i : i + n], enc[m])]
            b = [zero(g, p) for g, p in zip(g_uni[i : i + n], enc[m])]
            i += n
            new, stats = pareto_combine(a, b, self.params.alpha, self.params.rescale)
            self._pending[m] = new
            for k, v in stats.items():
                ctx.log(f"mmpareto/{k}/{m}", v)

    def after_backward(self, ctx) -> None:
        if self._pending is None:
            return
        groups = ctx.model.param_groups()
        for m, grads in self._pending.items():
            ps = [p for p in groups[f"encoder/{m}"] if p.requires_grad]
            for p, g in zip(ps, grads):
                p.grad = g.to(p.dtype)
        self._pending = None
