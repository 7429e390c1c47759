"""Gradient conflict: do the fused objective and a modality's own objective pull its encoder the same way?

For modality m with encoder parameters θ_m, fused loss L = CE(z, y) and unimodal loss
L_m = CE(z_m, y):

    conflict/cos/<m> = cos(∇θ_m L, ∇θ_m L_m) = ⟨g, g_m⟩ / (‖g‖ ‖g_m‖)

(the MMPareto statistic, Wei & Hu 2024). +1: the fused loss already trains m the way m
alone would; ≈ 0: the fused loss ignores what m could learn on its own (the suppressed
modality); < 0: fusion actively un-learns m's own solution.

On fusion parameters shared by several modalities (the concat layer's weight and bias;
the sum fusion has none), the modalities' unimodal gradients are compared pairwise:

    conflict/cos_fusion = mean_{a<b} cos(∇_φ L_a, ∇_φ L_b)

Negative values mean the modalities compete for the shared layer. For the sliced concat
layer the weight gradients of different modalities live on disjoint column blocks, so the
cosine is carried by the shared bias.

Cost: two backward passes through the encoders (fused loss; sum of unimodal losses, which
separates per encoder when each z_m depends on θ_m alone — otherwise one pass per
modality) plus M passes through the fusion layer only, paid every ``conflict_every`` steps; they never touch ``.grad`` or any RNG, so the training
trajectory is unchanged.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import torch

Grads = Sequence[torch.Tensor | None] | torch.Tensor


def _as_list(g: Grads) -> list[torch.Tensor | None]:
    if isinstance(g, torch.Tensor):
        return [g]
    return list(g)


def cosine(a: Grads, b: Grads) -> float:
    """Cosine between two gradients given as tensors or aligned lists of tensors (None = zero).

    Returns 0 when either gradient is zero (no direction, hence no agreement or conflict).
    """
    la, lb = _as_list(a), _as_list(b)
    if len(la) != len(lb):
        raise ValueError(f"gradient lists differ in length ({len(la)} vs {len(lb)})")
    xa = [x.detach() for x in la if x is not None]
    xb = [y.detach() for y in lb if y is not None]
    both = [(x.detach().reshape(-1), y.detach().reshape(-1)) for x, y in zip(la, lb) if x is not None and y is not None]
    if not both:
        return 0.0
    # Per-tensor dot products and norms (no concatenated float64 copies: those cost more than the
    # backward passes that produced the gradients); partial sums are accumulated in float64.
    dots = torch.stack([torch.dot(x, y.to(x.dtype)) for x, y in both]).double().sum()
    n1 = torch.stack(torch._foreach_norm(xa)).double().square().sum()
    n2 = torch.stack(torch._foreach_norm(xb)).double().square().sum()
    d, n1, n2 = torch.stack([dots, n1, n2]).tolist()
    if n1 <= 0.0 or n2 <= 0.0:
        return 0.0
    c = d / (n1**0.5 * n2**0.5)
    return float(max(-1.0, min(1.0, c)))


def live_unimodal_logits(model, out) -> dict[str, torch.Tensor]:
    """Per-modality logits connected to the encoders.

    Monitor heads (``heads=separate``) read detached features, so their loss has no
    gradient on θ_m; re-apply them to the live features to ask "where would m's own loss
    move its encoder".
    """
    heads = getattr(model, "heads", None)
    if heads is not None and getattr(out, "features", None):
        return {m: heads[m](out.features[m]) for m in model.modalities if m in out.features}
    return dict(out.logits)


def conflict_cosines(
    fused_loss: torch.Tensor,
    unimodal_losses: dict[str, torch.Tensor],
    encoder_params: dict[str, list[torch.nn.Parameter]],
    fusion_params: list[torch.nn.Parameter],
    separable: bool = False,
) -> dict[str, float]:
    """``conflict/cos/<m>`` per modality and ``conflict/cos_fusion`` (see module docstring).

    ``separable=True`` asserts that each L_m depends on no encoder but θ_m (true for sliced
    and per-modality heads with no cross-modal feature hook). Then ``∇θ_m Σ_k L_k = ∇θ_m L_m``
    and all unimodal encoder gradients come from one backward pass instead of M; the
    per-modality fusion gradients only traverse the fusion layer.
    """
    mods = [m for m in encoder_params if m in unimodal_losses]
    out: dict[str, float] = {}
    enc = {m: [p for p in encoder_params[m] if p.requires_grad] for m in mods}
    fus = [p for p in fusion_params if p.requires_grad]
    flat = [p for m in mods for p in enc[m]]
    if not flat:
        return out

    def split(g) -> dict[str, list]:
        res, i = {}, 0
        for m in mods:
            res[m] = list(g[i : i + len(enc[m])])
            i += len(enc[m])
        return res

    gf = torch.autograd.grad(fused_loss, flat, retain_graph=True, allow_unused=True) if fused_loss.requires_grad else (None,) * len(flat)
    by_m = split(gf)
    live = [m for m in mods if unimodal_losses[m].requires_grad]
    for m in mods:
        if m not in live:
            out[f"conflict/cos/{m}"] = 0.0
    fusion_grads: dict[str, list] = {}
    if separable and live:
        total = sum(unimodal_losses[m] for m in live)
        uni = split(torch.autograd.grad(total, flat, retain_graph=True, allow_unused=True))
        for m in live:
            out[f"conflict/cos/{m}"] = cosine(by_m[m], uni[m])
            if fus:
                fusion_grads[m] = list(torch.autograd.grad(unimodal_losses[m], fus, retain_graph=True, allow_unused=True))
    else:
        for m in live:
            g = torch.autograd.grad(unimodal_losses[m], enc[m] + fus, retain_graph=True, allow_unused=True)
            out[f"conflict/cos/{m}"] = cosine(by_m[m], list(g[: len(enc[m])]))
            fusion_grads[m] = list(g[len(enc[m]) :])
    pairs = []
    for a, b in combinations([m for m in mods if m in fusion_grads], 2):
        shared = [k for k in range(len(fus)) if fusion_grads[a][k] is not None and fusion_grads[b][k] is not None]
        if not shared:
            continue
        c = cosine([fusion_grads[a][k] for k in shared], [fusion_grads[b][k] for k in shared])
        pairs.append(c)
        if len(mods) > 2:
            out[f"conflict/cos_fusion/{a}-{b}"] = c
    if pairs:
        out["conflict/cos_fusion"] = sum(pairs) / len(pairs)
    return out
