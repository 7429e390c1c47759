"""Gradient methods as one call after ``loss.backward()``: OGM-GE and CPSL's conflict penalty.

Both methods only edit ``.grad`` of encoder parameters, so they need no hook into a loop:
given the parameters of each modality's encoder (``groups``: modality → parameters), these
functions apply exactly the update of :class:`~modalscope.methods.ogm_ge.OGMGE` and
:meth:`~modalscope.methods.cpsl.CPSL.after_backward`, using the same score, ratio, coefficient and
penalty functions those methods use:

* OGM-GE (Peng et al., CVPR 2022): ``s_m = Σ_i softmax(z_m,i)[y_i]``, ``ρ_m = s_m / s_k``,
  ``k_m = 1 − tanh(α·ρ_m)`` if ``ρ_m > 1`` else 1, then ``g ← k_m·g + N(0, std(g)²)`` per
  modulated tensor (``ge=False``: ``g ← k_m·g``).
* CPSL penalty (our interpretation, ``docs/methods.md``): ``n_m`` the gradient magnitude of
  modality m (``cpsl.gradient_magnitudes``), ``d = argmax n_m``,
  ``r = n_d / mean_{k≠d} n_k``; if ``r > τ`` the dominant encoder's gradient is scaled by
  ``c = 1/(1 + λ(r − τ))`` (``exp``: ``exp(−λ(r−τ))``).

Each returns the scalars its method logs (``ogm/*``, ``cpsl/*``) with the same names.
"""

from __future__ import annotations

from typing import Iterable

import torch

from modalscope.methods.cpsl import dominance_ratio, gradient_magnitudes, penalty_coefficient
from modalscope.methods.ogm_ge import modulate_

Groups = dict[str, Iterable[torch.nn.Parameter]]


def ogm_ge_(
    groups: Groups,
    logits: dict[str, torch.Tensor],
    labels: torch.Tensor,
    alpha: float = 0.3,
    ge: bool = True,
    multi_ratio: str = "min",
    tensors: str = "weights",
) -> dict[str, float]:
    """Modulate each encoder's ``.grad`` in place by its OGM coefficient (plus GE noise)."""
    mods = list(groups)
    missing = [m for m in mods if m not in logits]
    if len(mods) < 2 or missing:
        raise ValueError(f"OGM-GE needs per-modality logits for every encoder (missing: {', '.join(missing) or 'a second modality'})")
    return modulate_({m: list(groups[m]) for m in mods}, logits, labels, alpha, ge, multi_ratio, tensors)


def cpsl_penalty_(
    groups: Groups,
    tau: float = 2.0,
    lam: float = 0.5,
    penalty: str = "inverse",
    source: str | None = None,
    features: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Scale the dominant encoder's ``.grad`` by CPSL's conflict penalty when ``r > τ``.

    ``n_m`` is measured as :func:`modalscope.methods.cpsl.gradient_magnitudes` does: ``features``
    (‖∂L/∂h_m‖ at the fusion input; pass the encoder outputs ``h_m`` after calling
    ``h_m.retain_grad()`` before the backward), ``encoder_rms`` (the default without
    features: per-parameter RMS of the encoder's gradient) or ``encoder`` (raw norm).
    """
    groups = {m: list(ps) for m, ps in groups.items()}
    if len(groups) < 2:
        raise ValueError("the CPSL penalty needs at least 2 modality encoders (it compares their gradient norms)")
    source = source or ("features" if features else "encoder_rms")
    if source not in ("features", "encoder_rms", "encoder"):
        raise ValueError(f"source must be 'features', 'encoder_rms' or 'encoder', got {source!r}")
    if source == "features" and not all(features and m in features and features[m].grad is not None for m in groups):
        raise ValueError("source='features' needs each modality's fusion input h_m with a gradient (call h_m.retain_grad() before backward)")
    norms = gradient_magnitudes(source, features or {}, groups)
    d, r = dominance_ratio(norms)
    c = penalty_coefficient(r, tau, lam, penalty)
    if c != 1.0:
        for p in groups[d]:
            if p.grad is not None:
                p.grad.mul_(c)
    total = sum(norms.values())
    logs = {f"cpsl/share/{m}": (v / total if total > 0 else 1.0 / len(norms)) for m, v in norms.items()}
    logs.update({"cpsl/ratio": min(r, 1e6), "cpsl/conflict": float(r > tau), "cpsl/penalty": c, "cpsl/lambda": lam})
    return logs
