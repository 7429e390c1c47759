"""Modality contribution W^m = softmax(Î(m)·D(m) / T): information quantity times confidence.

Interpretation of CAL (Xu, Kou, Wu, Liu, arXiv 2510.26289; formulas are our interpretation,
written down in ``docs/methods.md``):

* **I(m)**, marginal performance, as the exact Shapley value of modality m in the game
  whose players are modalities and whose value is the fused model's score with the other
  modalities absent (zero input, or the training-set mean input):

      v(S) = −mean_i CE(z_S,i, y_i)
      I(m) = Σ_{S ⊆ M∖{m}} |S|! (M−|S|−1)! / M! · [v(S ∪ {m}) − v(S)]

  The values sum to v(M) − v(∅) (efficiency); a modality the model ignores gets 0.
* **D(m)**, confidence: mean true-class probability of m's unimodal logits,
  ``D(m) = mean_i p_m,i[y_i]`` (for regression ``1 / (1 + mean |z_m − y|)``).
* **W^m = softmax_m(Î(m) · D(m) / T)** with ``Î(m) = I(m) / Σ_k |I(k)|`` (each modality's
  share of the information, its magnitude relative to the others kept; min-max scaling is
  available but maps any two modalities to {0, 1}). High W^m: m both moves the fused decision
  and is confident on its own.

Cost: 2^M no-grad forward passes over the fixed evaluation batches (4 for two modalities).
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Callable

import numpy as np
import torch


def shapley_values(value: Callable[[frozenset[str]], float], modalities: list[str]) -> dict[str, float]:
    """Exact Shapley values over all 2^M subsets; ``value`` is called once per subset."""
    mods = list(modalities)
    M = len(mods)
    cache: dict[frozenset[str], float] = {}

    def v(s: frozenset[str]) -> float:
        if s not in cache:
            cache[s] = float(value(s))
        return cache[s]

    out: dict[str, float] = {}
    for m in mods:
        others = [k for k in mods if k != m]
        total = 0.0
        for r in range(len(others) + 1):
            w = math.factorial(r) * math.factorial(M - r - 1) / math.factorial(M)
            for sub in combinations(others, r):
                s = frozenset(sub)
                total += w * (v(s | {m}) - v(s))
        out[m] = total
    return out


def normalise_minmax(values: dict[str, float]) -> dict[str, float]:
    """Î = (I − min I) / (max I − min I) across modalities; all equal → 1 for every modality."""
    lo, hi = min(values.values()), max(values.values())
    if not hi - lo > 1e-12:
        return {m: 1.0 for m in values}
    return {m: (v - lo) / (hi - lo) for m, v in values.items()}


def normalise_sum(values: dict[str, float]) -> dict[str, float]:
    """Î = I / Σ_k |I(k)|: signed shares of the total information (all zero → 0 for every modality).

    Unlike min-max scaling it keeps the ratio between modalities: I = (3, 1) gives (0.75, 0.25),
    I = (3, 2.9) gives (0.51, 0.49), where min-max gives (1, 0) for both.
    """
    total = sum(abs(v) for v in values.values())
    if not total > 1e-12:
        return {m: 0.0 for m in values}
    return {m: v / total for m, v in values.items()}


def contribution_weights(
    info: dict[str, float], confidence: dict[str, float], temperature: float = 1.0, norm: str = "sum"
) -> dict[str, float]:
    """``W^m = softmax_m(Î(m) · D(m) / T)``; the weights are positive and sum to 1.

    ``norm="sum"``: Î = I / Σ|I| (:func:`normalise_sum`); ``"minmax"``: Î in [0, 1] (:func:`normalise_minmax`).
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    if norm not in ("sum", "minmax"):
        raise ValueError(f"norm must be 'sum' or 'minmax', got {norm!r}")
    mods = list(info)
    ihat = normalise_sum(info) if norm == "sum" else normalise_minmax(info)
    s = np.array([ihat[m] * confidence[m] / temperature for m in mods], dtype=np.float64)
    e = np.exp(s - s.max())
    w = e / e.sum()
    return {m: float(x) for m, x in zip(mods, w)}


def confidence(logits_m, y, task: str = "classification") -> float:
    """``D(m) = mean_i softmax(z_m,i)[y_i]`` (regression: ``1 / (1 + mean |z_m − y|)``)."""
    if task == "regression":
        z = np.asarray(logits_m.detach().cpu() if isinstance(logits_m, torch.Tensor) else logits_m, dtype=np.float64).reshape(-1)
        t = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64).reshape(-1)
        return float(1.0 / (1.0 + np.abs(z - t).mean()))
    from modalscope.diagnostics.gap import true_class_prob

    p = true_class_prob(logits_m, y)
    return float(p.float().mean()) if isinstance(p, torch.Tensor) else float(np.mean(p))


def absent_fill(batch: dict, modalities: list[str], absent: str, fill: dict | None = None) -> dict | None:
    """The replacement inputs for absent modalities: None (zeros) or per-modality means."""
    if absent == "zero":
        return None
    if absent != "mean":
        raise ValueError(f"absent must be 'zero' or 'mean', got {absent!r}")
    if fill is not None:
        return fill
    return {m: batch[m].float().mean(0).to(batch[m].dtype) for m in modalities}


def subset_value_fn(model, batch: dict, y, task: str, absent: str = "zero", fill: dict | None = None) -> Callable[[frozenset[str]], float]:
    """``v(S) = −mean task loss`` of the fused logits with modalities outside S absent.

    ``absent="zero"`` feeds zeros; ``"mean"`` feeds ``fill[m]`` (default: the batch mean).
    Runs under ``torch.no_grad``; the caller chooses train/eval mode.
    """
    from modalscope.methods.base import task_loss

    mods = list(model.modalities)
    f = absent_fill(batch, mods, absent, fill)

    def value(s: frozenset[str]) -> float:
        drop = set(mods) - set(s)
        with torch.no_grad():
            out = model(batch, drop=drop, fill=f)
            return -float(task_loss(out.fused, y, task))

    return value
