"""The per-sample modality gap: how much more one modality believes the truth than another.

For sample i with label y_i and unimodal logits z_{m,i}, ``p_m,i = softmax(z_m,i)`` and

    g_i = p_a,i[y_i] − p_b,i[y_i]        ∈ [−1, 1]

(Liu, Yu, Liu, arXiv 2510.21797). ``g ≈ 0`` means both modalities agree on the true class
(or are equally unsure); ``g → +1`` means modality a alone carries the sample, ``g → −1``
that b does. A bimodal distribution of g across the training set is the signature of a
subgroup of samples learnt through one modality only.

With three or more modalities every pair in modality order gets a series ``"<a>-<b>"``,
plus ``"strong-weak"``: the modality with the highest mean true-class probability minus the
one with the lowest, so the series always reads "dominant minus suppressed".

Everything works on numpy arrays; :func:`true_class_prob` and :func:`modality_gap` also take
torch tensors and stay differentiable (the GMM-guided loss back-propagates through g).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

GAP_RANGE = (-1.0, 1.0)
STRONG_WEAK = "strong-weak"


def GAP_EDGES(bins: int) -> np.ndarray:  # noqa: N802 - a constant-like function (fixed edges per bin count)
    """``bins + 1`` fixed, equally spaced histogram edges over [−1, 1] (comparable across epochs and runs)."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    return np.linspace(GAP_RANGE[0], GAP_RANGE[1], int(bins) + 1)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def true_class_prob(logits: Any, y: Any):
    """``softmax(logits)[y]`` per row. Torch in → torch out (differentiable); otherwise numpy."""
    if _is_torch(logits):
        import torch

        yt = torch.as_tensor(y, device=logits.device).long().reshape(-1, 1)
        return torch.softmax(logits, dim=-1).gather(1, yt).squeeze(1)
    z = np.asarray(logits, dtype=np.float64)
    yy = np.asarray(y).astype(np.int64).reshape(-1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[np.arange(len(yy)), yy] / e.sum(axis=1)


def modality_gap(logits_a: Any, logits_b: Any, y: Any):
    """``g = p_a[y] − p_b[y]`` per sample (torch or numpy, like :func:`true_class_prob`)."""
    return true_class_prob(logits_a, y) - true_class_prob(logits_b, y)


def gap_series(logits: dict[str, Any], y: Any, modalities: list[str]) -> dict[str, np.ndarray]:
    """Every gap series for these modalities, as float64 numpy arrays keyed by series name.

    Pairs ``"<a>-<b>"`` follow modality order (two modalities → only ``"audio-visual"``);
    three or more add ``"strong-weak"`` (highest minus lowest mean true-class probability).
    """
    mods = [m for m in modalities if m in logits]
    probs = {m: _np(true_class_prob(logits[m], y)) for m in mods}
    out: dict[str, np.ndarray] = {}
    for a, b in combinations(mods, 2):
        out[f"{a}-{b}"] = probs[a] - probs[b]
    if len(mods) >= 3:
        means = {m: float(p.mean()) if len(p) else 0.0 for m, p in probs.items()}
        strong = max(mods, key=lambda m: means[m])
        weak = min(mods, key=lambda m: means[m])
        out[STRONG_WEAK] = probs[strong] - probs[weak]
    return out


def primary_series(names: list[str]) -> str | None:
    """The series that summarises imbalance in one number: the only pair, else strong-weak."""
    if STRONG_WEAK in names:
        return STRONG_WEAK
    return names[0] if names else None


def gap_histogram(gap: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) over the fixed edges; values are clipped into [−1, 1] first."""
    edges = GAP_EDGES(bins)
    g = np.clip(np.asarray(gap, dtype=np.float64), *GAP_RANGE)
    counts, _ = np.histogram(g, bins=edges)
    return edges, counts.astype(np.float64)


def _np(x: Any) -> np.ndarray:
    if _is_torch(x):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
