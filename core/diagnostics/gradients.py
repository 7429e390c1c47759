"""Per-modality gradient diagnostics (every step, cheap: one fused norm kernel per group).

For modality encoder parameters θ_m with gradient g_m:

* ``grad_norm/<m> = ‖g_m‖₂`` — how hard the loss is pulling on modality m's encoder.
* ``grad_share/<m> = n_m / Σ_k n_k`` — the same as a share; 1/M means perfectly even.
* ``grad_ratio = n_d / mean_{k≠d} n_k`` with ``d = argmax_m n_m`` — the CPSL dominance ratio
  (1 = balanced; large = one modality's encoder receives almost all of the signal).
* ``conflict/flag = 1[grad_ratio > τ]`` — the CPSL conflict indicator (τ default 2).
"""

from __future__ import annotations

from typing import Iterable

import torch


def group_norm(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norm of the concatenated gradients of ``params`` (0 when none has a gradient)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.linalg.vector_norm(torch.stack(norms))


def dominance(norms: dict[str, float]) -> tuple[str, float]:
    """(dominant modality, ratio of its norm to the mean norm of the others)."""
    d = max(norms, key=lambda m: norms[m])
    others = [v for m, v in norms.items() if m != d]
    if not others:
        return d, 1.0
    mean = sum(others) / len(others)
    return d, (norms[d] / mean) if mean > 0 else float("inf")


_SEGMENTS: dict = {}


def group_norms(groups: dict[str, list[torch.nn.Parameter]]) -> list[float]:
    """Norm per group with one fused norm kernel over every gradient and one host sync."""
    keys = list(groups)
    grads, seg = [], []
    for i, k in enumerate(keys):
        for p in groups[k]:
            if p.grad is not None:
                grads.append(p.grad)
                seg.append(i)
    if not grads:
        return [0.0] * len(keys)
    sq = torch.stack(torch._foreach_norm(grads)).float().square()
    key = (tuple(seg), sq.device)
    idx = _SEGMENTS.get(key)
    if idx is None:
        idx = _SEGMENTS[key] = torch.tensor(seg, device=sq.device)
    return torch.zeros(len(keys), device=sq.device).index_add_(0, idx, sq).sqrt().tolist()


def gradient_stats(groups: dict[str, list[torch.nn.Parameter]], modalities: list[str], tau: float = 2.0) -> dict[str, float]:
    """Norms per group plus shares, dominance ratio and conflict flag across modality encoders."""
    keys = list(groups)
    vals = group_norms(groups)
    out: dict[str, float] = {}
    norms: dict[str, float] = {}
    for k, v in zip(keys, vals):
        name = k.split("/", 1)[1] if k.startswith("encoder/") else k
        out[f"grad_norm/{name}"] = v
        if k.startswith("encoder/"):
            norms[name] = v
    total = sum(norms.values())
    if len(norms) >= 2:
        for m, v in norms.items():
            out[f"grad_share/{m}"] = v / total if total > 0 else 1.0 / len(norms)
        _, r = dominance(norms)
        r = min(r, 1e6)
        out["grad_ratio"] = r
        out["conflict/flag"] = float(r > tau)
    return out


APPLIED_NAMES = {"grad_norm/": "grad_applied/", "grad_share/": "grad_applied_share/", "grad_ratio": "grad_applied_ratio"}


def applied_names(stats: dict[str, float]) -> dict[str, float]:
    """``gradient_stats`` output renamed to the ``grad_applied*`` names (the conflict flag dropped)."""
    out = {}
    for k, v in stats.items():
        for a, b in APPLIED_NAMES.items():
            if k.startswith(a):
                out[b + k[len(a):]] = v
    return out


def applied_gradient_stats(groups: dict[str, list[torch.nn.Parameter]], modalities: list[str], tau: float = 2.0) -> dict[str, float]:
    """:func:`gradient_stats` read after a method edited ``.grad``, under the ``grad_applied*`` names (no conflict flag)."""
    return applied_names(gradient_stats(groups, modalities, tau))
