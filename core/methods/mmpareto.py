"""MMPareto: Pareto-integrate fused and unimodal gradients per encoder (Wei & Hu, ICML 2024)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from modalscope.errors import ConfigError
from modalscope.methods.base import fused_and_unimodal, LossParts, Method, Panel, register_method
from modalscope.methods.window import WindowParams, joint_loss


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

    The weights use the whole encoder (all tensors flattened together): ``w = (½, ½)`` if
    ``cos(g_mm, g_uni) > 0``, else the MinNorm weights. Then, **per tensor** t (as the official
    code does): ``ĝ_t = 2(w1 g_mm,t + w2 g_uni,t)``; if ``‖g_mm,t + g_uni,t‖ / ‖ĝ_t‖ > 1`` then
    ``ĝ_t ← ĝ_t·‖g_mm,t + g_uni,t‖/‖ĝ_t‖``; result ``α·ĝ_t``. The logged ``rescale`` is the mean
    factor over the tensors.
    """
    d11, d22, d12 = float(_dot(g_mm, g_mm)), float(_dot(g_uni, g_uni)), float(_dot(g_mm, g_uni))
    cos = d12 / (d11 * d22) ** 0.5 if d11 > 0 and d22 > 0 else 0.0
    if cos > 0:
        w1, w2 = 0.5, 0.5
    else:
        w1, w2 = min_norm_weights(g_mm, g_uni)
    out, scales = [], []
    for a, b in zip(g_mm, g_uni):
        g_hat = 2.0 * (w1 * a + w2 * b)
        scale = 1.0
        if rescale:
            n_hat = float(torch.linalg.vector_norm(g_hat.double()))
            n_sum = float(torch.linalg.vector_norm((a + b).double()))
            if n_hat > 0 and n_sum / n_hat > 1.0:
                scale = n_sum / n_hat
        scales.append(scale)
        out.append(alpha * scale * g_hat)
    mean_scale = sum(scales) / len(scales) if scales else 1.0
    return out, {"cos": cos, "w": w1, "conflict": float(cos <= 0), "rescale": mean_scale}


@register_method("mmpareto")
class MMPareto(Method):
    """MMPareto: conflict-free integration of the multimodal and unimodal gradients.

    Model: as in the official code, each modality has its own linear head ``z_m = head_m(h_m)``
    (``model.heads=trained``, chosen automatically); the fusion layer sees only the multimodal
    loss and each head only its unimodal loss.

    Loss: ``L = CE(z, y) + Σ_m CE(z_m, y)``. Per step two autograd passes over every trainable
    parameter: ``G_mm = ∇ CE(z, y)`` and ``G_uni = ∇ Σ_k CE(z_k, y)``; ``z_k`` depends on θ_m only
    for k = m, so ``G_uni`` restricted to encoder m is ``g_m = ∇_{θ_m} CE(z_m, y)``. For each
    encoder θ_m:

    * ``w = (½, ½)`` if ``cos(g_mm, g_m) > 0``, else the MinNorm solution
      ``w1 = clip((g_m − g_mm)·g_m / ‖g_mm − g_m‖², 0, 1)``, ``w2 = 1 − w1`` (cosine and weights
      over the whole encoder, all tensors flattened);
    * per tensor t: ``ĝ_t = 2(w1·g_mm,t + w2·g_m,t)``; if ``‖g_mm,t + g_m,t‖/‖ĝ_t‖ > 1``
      rescale ĝ_t to ``‖g_mm,t + g_m,t‖``;
    * ``θ_m.grad ← α·ĝ``. Every other parameter gets ``G_mm + G_uni`` (= ∇L: the fusion layer
      gets the multimodal gradient only, each head its unimodal gradient only).

    Logged: ``mmpareto/cos/<m>``, ``mmpareto/w/<m>`` (weight of g_mm), ``mmpareto/conflict/<m>``,
    ``mmpareto/rescale/<m>`` (mean per-tensor factor). Outside ``[start_epoch, end_epoch)`` the
    step is exactly ``joint``. Cost: 2 backward passes per step for any M. Until ``after_backward``
    every parameter holds ∇L, so gradient diagnostics see the unmodified gradient.
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

    @classmethod
    def unimodal_heads(cls, params) -> str:
        return "trained"

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
        enc_ids = {id(p) for ps in enc.values() for p in ps}
        params = [p for p in ctx.trainer.parameters() if p.requires_grad]
        uni = sum(parts.parts[m] for m in self.modalities)
        g_mm = torch.autograd.grad(parts.parts["fused"], params, retain_graph=True, allow_unused=True)
        g_uni = torch.autograd.grad(uni, params, allow_unused=True)
        zero = lambda g, p: torch.zeros_like(p) if g is None else g  # noqa: E731
        mm = {id(p): zero(g, p) for g, p in zip(g_mm, params)}
        un = {id(p): zero(g, p) for g, p in zip(g_uni, params)}
        for p, a, b in zip(params, g_mm, g_uni):
            if id(p) in enc_ids or a is not None or b is not None:
                p.grad = mm[id(p)] + un[id(p)]
        self._pending = {}
        for m in self.modalities:
            new, stats = pareto_combine([mm[id(p)] for p in enc[m]], [un[id(p)] for p in enc[m]], self.params.alpha, self.params.rescale)
            self._pending[m] = new
            for k, v in stats.items():
                ctx.log(f"mmpareto/{k}/{m}", v)

    def after_backward(self, ctx) -> None:
        """Replace each encoder's gradient (∇L until now, what gradient diagnostics see) by α·ĝ."""
        if self._pending is None:
            return
        groups = ctx.model.param_groups()
        for m, grads in self._pending.items():
            ps = [p for p in groups[f"encoder/{m}"] if p.requires_grad]
            for p, g in zip(ps, grads):
                p.grad = g.to(p.dtype)
        self._pending = None
