"""Paired comparison against the ``joint`` baseline: seed-paired differences, their 95 % t-interval,
rankings, and gap histograms pooled over a group's runs.

Why paired: runs of two methods with the same seed share the data draw and the initialisation,
so most seed-to-seed variation cancels in the difference. For one group with ``n`` seeds
the differences ``d_i = x_i − x_i^joint`` give the interval

    d̄ ± t_{0.975, n−1} · s_d / √n,      s_d = sample standard deviation (ddof = 1),

the textbook paired-t interval (e.g. Wasserman, *All of Statistics*, §10.4). One pair gives
a difference but no interval. No Streamlit and no store access here: frames in, frames out.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

REFERENCE = "joint"
#: columns every pair must agree on besides the method (same data draw, same seed)
PAIR_ON = ("dataset", "preset", "seed")


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of the Student-t interval for the mean of ``values`` (NaNs dropped).

    ``low``/``high`` are NaN for fewer than two values (no spread to estimate)."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, 1
    half = float(t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def pair_with_reference(runs: pd.DataFrame, on: Sequence[str] = PAIR_ON, reference: str = REFERENCE,
                        method_col: str = "method") -> pd.Series:
    """For each run (row, ``key`` column) the key of the ``reference``-method run it is paired with:
    equal on every column of ``on`` (missing columns are ignored). A run from the same source
    (``runs``/``gallery``) is preferred. NaN where no such run exists."""
    on = [c for c in on if c in runs.columns]
    refs = runs[runs[method_col] == reference]
    out = []
    for _, r in runs.iterrows():
        cand = refs
        for c in on:
            cand = cand[cand[c].astype(str) == str(r[c])]
        if cand.empty:
            out.append(np.nan)
            continue
        if "source" in cand and (cand["source"] == r.get("source")).any():
            cand = cand[cand["source"] == r.get("source")]
        out.append(cand["key"].iloc[0])
    return pd.Series(out, index=runs.index, name="ref")


def paired_differences(runs: pd.DataFrame, metric: str, ref_col: str = "ref") -> pd.Series:
    """``metric`` of each run minus ``metric`` of its paired reference run (NaN if either is missing)."""
    by_key = pd.to_numeric(runs.set_index("key")[metric], errors="coerce")
    by_key = by_key[~by_key.index.duplicated()]
    ref_vals = runs[ref_col].map(by_key)
    return pd.to_numeric(runs[metric], errors="coerce") - pd.to_numeric(ref_vals, errors="coerce")


def delta_summary(runs: pd.DataFrame, metric: str, group_col: str = "group", ref_col: str = "ref",
                  level: float = 0.95) -> pd.DataFrame:
    """One row per group: ``n_pairs``, ``delta`` (mean paired difference), ``low``/``high`` (t-interval)
    and ``is_reference`` (every run of the group is its own reference: Δ is 0 by construction)."""
    d = runs.assign(_d=paired_differences(runs, metric, ref_col))
    rows = []
    for grp, g in d.groupby(group_col, sort=False, observed=True):
        mean, lo, hi, n = t_interval(g["_d"], level)
        rows.append({group_col: grp, "n_pairs": n, "delta": mean, "low": lo, "high": hi,
                     "is_reference": bool(len(g)) and bool((g["key"] == g[ref_col]).all())})
    return pd.DataFrame(rows, columns=[group_col, "n_pairs", "delta", "low", "high", "is_reference"])


def format_delta(delta: float, low: float, high: float, n: int, is_reference: bool = False, digits: int = 3) -> str:
    """``+0.031 [−0.004, +0.066] (3 seeds)``; ``reference`` for the baseline, ``—`` when nothing pairs."""
    if is_reference:
        return "reference"
    if n == 0 or not np.isfinite(delta):
        return "—"
    f = f"{{:+.{digits}f}}"
    if n < 2 or not np.isfinite(low):
        return f"{f.format(delta)} (1 seed)"
    return f"{f.format(delta)} [{f.format(low)}, {f.format(high)}] ({n} seeds)"


def rank(scores: pd.Series) -> pd.Series:
    """1 = highest score; ties share the better rank; NaN scores rank last (NaN rank)."""
    return pd.to_numeric(scores, errors="coerce").rank(ascending=False, method="min")


def final_metric_columns(finals: dict[str, float], modalities: Iterable[str]) -> dict[str, float]:
    """Flatten one run's last logged scalars into the comparison's columns:

    ``best_fused`` ← ``acc/best/test/fused`` (test accuracy at the epoch of best *valid* fused accuracy),
    ``probe_<m>`` ← ``probe/test/<m>``, ``probe_init_<m>`` ← ``probe_init/test/<m>``,
    ``util_<m>`` ← ``probe_util/<m>``."""
    out: dict[str, float] = {"best_fused": finals.get("acc/best/test/fused", math.nan)}
    for m in modalities:
        out[f"probe_{m}"] = finals.get(f"probe/test/{m}", math.nan)
        out[f"probe_init_{m}"] = finals.get(f"probe_init/test/{m}", math.nan)
        out[f"util_{m}"] = finals.get(f"probe_util/{m}", math.nan)
    return out


def mean_std(values: Iterable[Any]) -> tuple[float, float, int]:
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").dropna()
    if v.empty:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=0)), len(v)


def fmt_mean_std(mean: float, std: float, n: int, digits: int = 3) -> str:
    if n == 0 or not np.isfinite(mean):
        return "—"
    f = f"{{:.{digits}f}}"
    return f.format(mean) if n == 1 else f"{f.format(mean)} ± {f.format(std)}"


def pool_histograms(rows: Sequence[dict]) -> dict | None:
    """Sum the counts of histogram rows drawn on the same bin edges (one group's runs at one epoch).

    Rows whose edges differ from the first row's are left out (they cannot be added bin by bin);
    ``n_runs`` says how many were pooled."""
    rows = [r for r in rows if r is not None]
    if not rows:
        return None
    edges = np.asarray(rows[0]["edges"], dtype=np.float64)
    counts = np.zeros(len(edges) - 1)
    n = 0
    for r in rows:
        e = np.asarray(r["edges"], dtype=np.float64)
        if e.shape != edges.shape or not np.allclose(e, edges):
            continue
        counts += np.asarray(r["counts"], dtype=np.float64)
        n += 1
    return {**{k: v for k, v in rows[0].items() if k not in ("edges", "counts")}, "edges": edges, "counts": counts, "n_runs": n}
