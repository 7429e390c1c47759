"""The Learn page's claims, computed from the runs it shows (pure functions, unit-tested).

Every sentence on the walk-through that states a number or a verdict comes from here, so the
text cannot drift from the charts: which modality is the weak one, whether its encoder is
starved (suppression) or only used for what the other modality lacks (specialisation), where
the gradient went, and which methods pass the page's own test,

    *raise the weak modality without losing fused accuracy*:

* **raises the weak modality**: the seed-paired difference to ``joint`` of the weak modality's
  measure (encoder utilisation ``probe_util/<m>`` when logged, else its probe accuracy, else its
  head accuracy) is positive, and its 95 % t-interval lies above 0 when there are ≥ 2 seeds;
* **keeps fused accuracy**: the mean seed-paired difference of fused test accuracy is at least
  −``FUSED_TOLERANCE`` (one point, about the standard error of one seed's test accuracy).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from modalscope.dashboard.comparison import delta_summary

FUSED_TOLERANCE = 0.01
#: utilisation at or above this: the encoder learnt about what it learns alone
LEARNT = 0.7
#: utilisation at or below this: the encoder is starved (the issue's criterion (b) for joint)
STARVED = 0.4
#: a head this far below its trained-alone accuracy is a shortfall worth explaining
SHORTFALL = 0.05


def _finite(d: Mapping[str, float] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (d or {}).items() if v is not None and np.isfinite(v)}


def weak_modality(alone: Mapping[str, float] | None = None, utilisation: Mapping[str, float] | None = None,
                  heads: Mapping[str, float] | None = None) -> tuple[str | None, str]:
    """The weak modality and why, from the first evidence available for at least two modalities:

    1. the lowest test accuracy when trained alone (``unimodal`` runs);
    2. the lowest encoder utilisation under joint training;
    3. the lowest per-modality head accuracy inside the joint model.

    Returns ``(None, reason)`` when no source covers two modalities."""
    for values, why in ((alone, "lowest test accuracy when trained alone"),
                        (utilisation, "lowest encoder utilisation under joint training"),
                        (heads, "lowest head accuracy inside the joint model")):
        v = _finite(values)
        if len(v) >= 2:
            m = min(v, key=lambda k: (v[k], k))
            return m, f"{why} ({', '.join(f'{k} {x:.2f}' for k, x in sorted(v.items()))})"
    return None, "no unimodal runs, utilisation or per-modality heads to compare"


def weak_measure(columns: Sequence[str], weak: str) -> tuple[str | None, str]:
    """The column that measures how much the weak modality learnt, best first:
    utilisation, then probe accuracy, then head accuracy."""
    for col, label in ((f"util_{weak}", f"{weak} encoder utilisation"), (f"probe_{weak}", f"{weak} probe accuracy"),
                       (f"acc_{weak}", f"{weak} head accuracy")):
        if col in columns:
            return col, label
    return None, ""


def verdicts(runs: pd.DataFrame, measure: str, fused: str = "acc_fused", group_col: str = "group",
             ref_col: str = "ref", tolerance: float = FUSED_TOLERANCE) -> pd.DataFrame:
    """The page's test applied to each group of ``runs`` (rows paired with their joint run by ``ref_col``).

    Columns: ``group, n_pairs, d_fused, d_fused_low, d_fused_high, d_weak, d_weak_low, d_weak_high,
    raises, keeps, passes``. The reference group itself is left out."""
    df = delta_summary(runs, fused, group_col, ref_col)
    dw = delta_summary(runs, measure, group_col, ref_col)
    m = df.merge(dw, on=[group_col, "is_reference"], suffixes=("_f", "_w"))
    m = m[~m["is_reference"]]
    rows = []
    for _, r in m.iterrows():
        n_w = int(r["n_pairs_w"])
        if n_w >= 2 and np.isfinite(r["low_w"]):
            raises = bool(r["low_w"] > 0)
        else:
            raises = bool(n_w >= 1 and r["delta_w"] > 0)
        keeps = bool(int(r["n_pairs_f"]) >= 1 and r["delta_f"] >= -tolerance)
        rows.append({group_col: r[group_col], "n_pairs": int(r["n_pairs_f"]), "d_fused": r["delta_f"], "d_fused_low": r["low_f"],
                     "d_fused_high": r["high_f"], "d_weak": r["delta_w"], "d_weak_low": r["low_w"], "d_weak_high": r["high_w"],
                     "raises": raises, "keeps": keeps, "passes": raises and keeps})
    return pd.DataFrame(rows, columns=[group_col, "n_pairs", "d_fused", "d_fused_low", "d_fused_high", "d_weak", "d_weak_low",
                                       "d_weak_high", "raises", "keeps", "passes"])


def bit_utilisation(run: Mapping[str, float], alone: Mapping[str, float], modality: str) -> dict[int, float]:
    """Per latent bit b: ``(probe_b − probe_init_b) / (probe_b alone − probe_init_b)`` from the
    ``probe/bit/<m>/<b>`` and ``probe_init/bit/<m>/<b>`` scalars of a run and of its trained-alone
    reference (synthetic data only). Bits whose reference gained nothing are left out."""
    out: dict[int, float] = {}
    prefix = f"probe/bit/{modality}/"
    for name, v in run.items():
        if not name.startswith(prefix):
            continue
        b = name[len(prefix):]
        init = run.get(f"probe_init/bit/{modality}/{b}", math.nan)
        ref = alone.get(name, math.nan)
        if np.isfinite(v) and np.isfinite(init) and np.isfinite(ref) and ref - init > 1e-9:
            out[int(b)] = float((v - init) / (ref - init))
    return dict(sorted(out.items()))


def shortfall_kind(head: float, alone: float, utilisation: float, bits: Mapping[int, float] | None = None) -> str:
    """Why a modality's head ends below its trained-alone accuracy.

    With per-bit utilisations (``bits``, synthetic data): ``specialisation`` when at least one bit
    is learnt about as well as alone (≥ ``LEARNT``): the encoder kept what the fused model needs
    from it (what the other modality lacks) and the head is low by design; otherwise, and without
    bits, the overall utilisation decides: ``suppression`` when the encoder learnt little
    (≤ ``STARVED``), ``specialisation`` when it learnt about what it learns alone (≥ ``LEARNT``),
    ``partial`` in between. ``none`` when the head is within ``SHORTFALL`` of alone; ``unknown``
    without a utilisation."""
    if not (np.isfinite(head) and np.isfinite(alone)):
        return "unknown"
    if alone - head < SHORTFALL:
        return "none"
    if bits and max(bits.values()) >= LEARNT:
        return "specialisation"
    if not np.isfinite(utilisation):
        return "unknown"
    if utilisation <= STARVED:
        return "suppression"
    if utilisation >= LEARNT:
        return "specialisation"
    return "partial"


def gradient_share_story(share: pd.DataFrame, weak: str, strong: str, n_bins: int = 20) -> dict[str, float]:
    """Numbers the gradient-share chart shows, from the weak modality's ``grad_share`` series.

    ``share``: ``step, value`` (the share of ‖g‖ of the weak encoder). Steps are cut into
    ``n_bins`` equal bins; returns the mean share over the first 10 % of steps (``early``),
    over the last 25 % (``late``), and the longest stretch of consecutive bins where the weak
    modality holds more than half (``peak_from``/``peak_to`` steps, ``peak`` mean share, NaN if
    never), plus ``last_step``."""
    s = share.sort_values("step")
    steps = s["step"].to_numpy(dtype=np.float64)
    vals = s["value"].to_numpy(dtype=np.float64)
    if len(steps) == 0:
        return {}
    lo, hi = steps.min(), steps.max()
    span = max(hi - lo, 1.0)
    early = float(np.nanmean(vals[steps <= lo + 0.1 * span]))
    late = float(np.nanmean(vals[steps >= hi - 0.25 * span]))
    edges = np.linspace(lo, hi + 1e-9, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, n_bins - 1)
    means = np.array([np.nanmean(vals[idx == b]) if (idx == b).any() else np.nan for b in range(n_bins)])
    best, cur = (0, -1, -1), None
    for b, v in enumerate(means):
        if np.isfinite(v) and v > 0.5:
            cur = (cur[0], b) if cur else (b, b)
            if cur[1] - cur[0] + 1 > best[0]:
                best = (cur[1] - cur[0] + 1, cur[0], cur[1])
        else:
            cur = None
    out = {"early": early, "late": late, "last_step": float(hi), "peak": math.nan, "peak_from": math.nan, "peak_to": math.nan}
    if best[0] > 0:
        a, b = best[1], best[2]
        sel = (idx >= a) & (idx <= b)
        out.update(peak=float(np.nanmean(vals[sel])), peak_from=float(steps[sel].min()), peak_to=float(steps[sel].max()))
    return out


def gradient_share_text(story: Mapping[str, float], weak: str, strong: str) -> str:
    """The sentence under the gradient chart, written from :func:`gradient_share_story`'s numbers."""
    if not story:
        return ""
    parts = [f"Over the first tenth of training *{weak}* gets **{story['early']:.0%}** of the encoders' gradient "
             f"(*{strong}* gets the rest)."]
    if np.isfinite(story.get("peak", math.nan)):
        parts.append(f"*{weak}* holds more than half between steps {story['peak_from']:.0f} and {story['peak_to']:.0f} "
                     f"(**{story['peak']:.0%}** on average there).")
    else:
        parts.append(f"*{weak}* never holds more than half of it.")
    parts.append(f"Over the last quarter it gets **{story['late']:.0%}**.")
    return " ".join(parts)
