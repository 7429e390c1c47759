"""Balanced vs imbalanced training samples, from a mixture fitted to each modality-gap pair.

Shared by ``gmm_adaptive`` and ``purify`` (Liu, Yu, Liu, arXiv 2510.21797; ``docs/methods.md``).
With two modalities there is one gap series ``g = p_a[y] − p_b[y]`` and one mixture. With
three or more, every modality pair ``(a, b)`` in modality order gets its own series and its
own mixture (our interpretation [I]), and a sample counts as imbalanced as much as its most
imbalanced pair: ``γ_i = max_pairs γ_i^{ab}``. For M = 2 this is exactly the paper's γ.

The maths (gap, EM fit, posterior) lives in :mod:`modalscope.diagnostics.gap` and
:mod:`modalscope.diagnostics.gmm`; this module only arranges it per pair, turns a posterior into
the purification subset and (de)serialises mixtures for checkpoints (plain floats only, so
``torch.load(weights_only=True)`` reads them).
"""

from __future__ import annotations

from dataclasses import fields
from itertools import combinations

import numpy as np
import torch

from modalscope.diagnostics.gap import gap_series
from modalscope.diagnostics.gmm import GapMixture, fit_gap_mixture


def gap_pairs(modalities: list[str]) -> list[tuple[str, str]]:
    return list(combinations(modalities, 2))


def pair_name(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-{pair[1]}"


def pair_gaps(logits: dict, y, pairs: list[tuple[str, str]]) -> np.ndarray:
    """(n, P) numpy gaps, one column per pair (no grad)."""
    mods = list(dict.fromkeys(m for p in pairs for m in p))
    series = gap_series(logits, y, mods)
    return np.stack([series[pair_name(p)] for p in pairs], axis=1)


def fit_mixtures(gaps: np.ndarray, seed: int = 0, use_abs: bool = False) -> list[GapMixture]:
    return [fit_gap_mixture(gaps[:, j], seed=seed, use_abs=use_abs) for j in range(gaps.shape[1])]


def posteriors(mixtures: list[GapMixture], gaps: np.ndarray) -> np.ndarray:
    """(n, P) γ per pair: posterior of each pair's imbalanced component."""
    g = np.asarray(gaps, dtype=np.float64).reshape(len(gaps), len(mixtures))
    return np.stack([mx.posterior_imbalanced(g[:, j]) for j, mx in enumerate(mixtures)], axis=1)


def balanced_subset(gamma: np.ndarray, tau_b: float = 0.5) -> np.ndarray:
    """Dataset positions whose balanced posterior ``1 − γ_i`` is at least ``τ_b`` (sorted)."""
    g = np.asarray(gamma, dtype=np.float64)
    if g.ndim == 2:
        g = g.max(axis=1)
    return np.flatnonzero(1.0 - g >= tau_b)


def mixture_state(mx: GapMixture) -> dict:
    out = {}
    for f in fields(mx):
        v = getattr(mx, f.name)
        out[f.name] = [float(x) for x in np.asarray(v).reshape(-1)] if isinstance(v, (np.ndarray, list)) else v
        if isinstance(out[f.name], (np.floating, np.integer, np.bool_)):
            out[f.name] = out[f.name].item()
    return out


def mixture_from_state(state: dict) -> GapMixture:
    kw = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, list) else v) for k, v in state.items()}
    return GapMixture(**kw)


def mixture_scalars(mixtures: list[GapMixture], pairs: list[tuple[str, str]], prefix: str = "gmm") -> dict[str, float]:
    """``gmm/mu_b``, ``gmm/mu_u``, ``gmm/sigma_b``, ``gmm/sigma_u``, ``gmm/pi_u``, ``gmm/evidence``
    (suffixed ``/<a>-<b>`` when there is more than one pair)."""
    out = {}
    for mx, p in zip(mixtures, pairs):
        sfx = "" if len(pairs) == 1 else f"/{pair_name(p)}"
        b, u = mx.balanced, mx.imbalanced
        out[f"{prefix}/mu_b{sfx}"] = float(mx.means[b])
        out[f"{prefix}/mu_u{sfx}"] = float(mx.means[u])
        out[f"{prefix}/sigma_b{sfx}"] = float(np.sqrt(mx.variances[b]))
        out[f"{prefix}/sigma_u{sfx}"] = float(np.sqrt(mx.variances[u]))
        out[f"{prefix}/pi_u{sfx}"] = float(mx.weights[u])
        out[f"{prefix}/evidence{sfx}"] = float(mx.bic1 - mx.bic2)
    return out


def purification_state(method) -> dict:
    """Checkpoint state shared by the GMM methods: balanced subset, mixtures, whether lr was scaled."""
    return {
        "subset": None if method.subset is None else torch.as_tensor(method.subset, dtype=torch.long),
        "mixtures": None if method.mixtures is None else [mixture_state(m) for m in method.mixtures],
        "lr_scaled": method.lr_scaled,
    }


def load_purification_state(method, state: dict) -> None:
    method.subset = None if state.get("subset") is None else state["subset"].numpy()
    method.mixtures = None if state.get("mixtures") is None else [mixture_from_state(s) for s in state["mixtures"]]
    method.lr_scaled = bool(state.get("lr_scaled", False))
