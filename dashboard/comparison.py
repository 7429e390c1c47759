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

from modalscope.store import PAIRING_FINALS

REFERENCE = "joint"
#: columns every pair must agree on besides the method (same data draw, same seed)
PAIR_ON = ("dataset", "preset", "seed")


def t_quantile(level: float, df: int) -> float:
    """Two-sided Student-t quantile: the ``t`` with P(|T| ≤ t) = ``level`` for ``df`` (integer)
    degrees of freedom, by bisection on the closed-form CDF of Abramowitz & Stegun 26.7.3–4
    (θ = atan(t/√ν); odd ν: (2/π)(θ + sinθ·cosθ·Σ), even ν: sinθ·Σ, Σ a finite series in cos²θ).
    Exact to float precision, and spares the Compare page importing scipy (~0.3–0.9 s)."""
    nu = int(df)
    if nu < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"t_quantile needs df ≥ 1 and 0 < level < 1, got df={df}, level={level}")

    def inside(t: float) -> float:
        th = math.atan(t / math.sqrt(nu))
        c2, s = math.cos(th) ** 2, math.sin(th)
        if nu % 2:
            term, total = 1.0, 0.0
            if nu > 1:
                total = 1.0
                for k in range(3, nu - 1, 2):  # 1 + 2/3 c² + (2·4)/(3·5) c⁴ + … up to c^(ν−3)
                    term *= (k - 1) / k * c2
                    total += term
            return 2 / math.pi * (th + s * math.cos(th) * total)
        term, total = 1.0, 1.0
        for k in range(2, nu - 1, 2):  # 1 + 1/2 c² + (1·3)/(2·4) c⁴ + … up to c^(ν−2)
            term *= (k - 1) / k * c2
            total += term
        return s * total

    lo, hi = 0.0, 1.0
    while inside(hi) < level:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if inside(mid) < level:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return (lo + hi) / 2


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of the Student-t interval for the mean of ``values`` (NaNs dropped).

    ``low``/``high`` are NaN for fewer than two values (no spread to estimate)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, 1
    half = float(t_quantile(level, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def pair_with_reference(runs: pd.DataFrame, on: Sequence[str] = PAIR_ON, reference: str = REFERENCE,
                        method_col: str = "method") -> pd.Series:
    """For each run (row, ``key`` column) the key of the ``reference``-method run it is paired with:
    equal on every column of ``on`` (missing columns are ignored). A run from the same source
    (``runs``/``gallery``) is preferred. NaN where no such run exists; a missing value in a
    column of ``on`` matches nothing."""
    on = [c for c in on if c in runs.columns]
    refs = runs[runs[method_col] == reference]
    has_source = "source" in runs.columns

    def signature(frame: pd.DataFrame) -> list[tuple[str, ...] | None]:
        """Values compared as text; a missing value matches nothing (None)."""
        if not on:
            return [()] * len(frame)
        text = list(zip(*(frame[c].astype(str).tolist() for c in on)))
        missing = frame[on].isna().any(axis=1).tolist()
        return [None if m else t for t, m in zip(text, missing)]

    # one dict lookup per run instead of filtering the reference rows column by column
    by_sig: dict[tuple[str, ...], list[tuple[object, object]]] = {}
    ref_sources = refs["source"].tolist() if has_source else [None] * len(refs)
    for sig, key, src in zip(signature(refs), refs["key"].tolist(), ref_sources):
        if sig is not None:
            by_sig.setdefault(sig, []).append((src, key))
    run_sources = runs["source"].tolist() if has_source else [None] * len(runs)
    out = []
    for sig, src in zip(signature(runs), run_sources):
        cand = by_sig.get(sig) if sig is not None else None
        if not cand:
            out.append(np.nan)
            continue
        same = [k for s, k in cand if s == src] if has_source else []
        out.append(same[0] if same else cand[0][1])
    return pd.Series(out, index=runs.index, name="ref")


def paired_differences(runs: pd.DataFrame, metric: str, ref_col: str = "ref", lookup: pd.DataFrame | None = None) -> pd.Series:
    """``metric`` of each run minus ``metric`` of its paired reference run (NaN if either is missing).
    Reference values are looked up in ``lookup`` (rows with ``key``), default ``runs`` itself."""
    parts = [f[["key", metric]] for f in ((runs,) if lookup is None else (runs, lookup)) if metric in f]
    if not parts:
        return pd.Series(np.nan, index=runs.index)
    src = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]  # two columns: not every column of every run
    by_key = pd.to_numeric(src.set_index("key")[metric], errors="coerce")
    by_key = by_key[~by_key.index.duplicated()]
    ref_vals = runs[ref_col].map(by_key)
    return pd.to_numeric(runs[metric], errors="coerce") - pd.to_numeric(ref_vals, errors="coerce")


def delta_summary(runs: pd.DataFrame, metric: str, group_col: str = "group", ref_col: str = "ref",
                  level: float = 0.95, lookup: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per group: ``n_pairs``, ``delta`` (mean paired difference), ``low``/``high`` (t-interval)
    and ``is_reference`` (every run of the group is its own reference: Δ is 0 by construction).
    ``lookup``: further runs (``key`` + ``metric``) where reference runs not in ``runs`` are found."""
    diffs = paired_differences(runs, metric, ref_col, lookup).to_numpy(dtype=np.float64)
    own = (runs["key"] == runs[ref_col]).to_numpy()
    rows = []
    for grp, idx in runs.groupby(group_col, sort=False, observed=True).indices.items():  # positions: no sub-frame per group
        mean, lo, hi, n = t_interval(diffs[idx], level)
        rows.append({group_col: grp, "n_pairs": n, "delta": mean, "low": lo, "high": hi,
                     "is_reference": bool(len(idx)) and bool(own[idx].all())})
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


#: the scalar names :func:`final_metric_columns` reads (prefixes; the utilisation lookup reads the same)
FINAL_PREFIXES = PAIRING_FINALS


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


def comparison_table(sel: pd.DataFrame, weak: str | None, label: str = "group", alone_probe: float = math.nan,
                     alone_acc: float = math.nan, lookup: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Compare page's table: one row per group (or run) of ``sel``, best rank first.

    ``sel`` has ``key, group, ref`` (paired joint run), ``acc_*`` (last epoch), ``best_fused``,
    ``probe_<m>``/``util_<m>``, optional ``bayes_fused`` and ``wall_s``; ``lookup`` holds the paired
    reference runs that are not selected. Returns ``(numbers, shown)``:
    ``numbers`` keeps floats (``<col> mean``, ``<col> std``, ``d_fused``, ``d_fused_low``...);
    ``shown`` is formatted for reading. The rank orders groups by fused test accuracy at the
    best-valid epoch when every group has it, else at the last epoch (``rank_by`` says which)."""
    d = sel.copy()
    if "bayes_fused" in d and "acc_fused" in d:
        d["gap_to_bayes"] = pd.to_numeric(d["bayes_fused"], errors="coerce") - pd.to_numeric(d["acc_fused"], errors="coerce")
    heads = sorted(c for c in d.columns if c.startswith("acc_") and c != "acc_fused" and pd.to_numeric(d[c], errors="coerce").notna().any())
    weak_cols = [c for c in (f"probe_{weak}", f"util_{weak}") if weak and c in d and pd.to_numeric(d[c], errors="coerce").notna().any()]
    value_cols = [c for c in ["best_fused", "acc_fused"] + heads + weak_cols + ["gap_to_bayes", "wall_s"]
                  if c in d and (c == "acc_fused" or pd.to_numeric(d[c], errors="coerce").notna().any())]
    values = {c: pd.to_numeric(d[c], errors="coerce").to_numpy(dtype=np.float64) for c in value_cols}
    rows = []
    for grp, idx in d.groupby("group", sort=False, observed=True).indices.items():  # as mean_std, on arrays converted once
        row: dict[str, Any] = {"group": grp, "n": len(idx)}
        for c in value_cols:
            v = values[c][idx]
            v = v[~np.isnan(v)]
            row[f"{c} mean"], row[f"{c} std"], row[f"{c} n"] = (float(v.mean()), float(v.std()), len(v)) if len(v) else (math.nan, math.nan, 0)
        rows.append(row)
    num = pd.DataFrame(rows)
    deltas = {"fused": "acc_fused"}
    if weak_cols:
        deltas[f"{weak}_measure"] = weak_cols[-1]
    for short, col in deltas.items():
        ds = delta_summary(d, col, "group", "ref", lookup=lookup).set_index("group")
        for part in ("delta", "low", "high", "n_pairs", "is_reference"):
            num[f"d_{short}_{part}"] = num["group"].map(ds[part])
    use_best = "best_fused n" in num and bool((num["best_fused n"] > 0).all())
    score = "best_fused mean" if use_best else "acc_fused mean"
    num["rank"] = rank(num[score]) if score in num else math.nan
    num["rank_by"] = "best-valid" if use_best else "last epoch"
    num = num.sort_values(["rank", "group"], na_position="last", kind="stable").reset_index(drop=True)

    names = {"best_fused": "fused (best-valid)", "acc_fused": "fused (last epoch)"}
    names.update({c: f"{c[4:]} head" for c in heads})
    if weak:
        names.update({f"probe_{weak}": f"{weak} probe", f"util_{weak}": f"{weak} utilisation"})
    shown = pd.DataFrame({label: num["group"].astype(str), "rank": num["rank"].map(lambda r: "—" if pd.isna(r) else int(r)), "n": num["n"]})
    for c in value_cols:
        digits = 1 if c == "wall_s" else 3
        shown[names.get(c, c)] = [fmt_mean_std(m, s, n, digits) for m, s, n in zip(num[f"{c} mean"], num[f"{c} std"], num[f"{c} n"])]
        if c == "acc_fused":
            shown["Δ fused vs joint"] = [format_delta(*a) for a in zip(num["d_fused_delta"], num["d_fused_low"], num["d_fused_high"],
                                                                       num["d_fused_n_pairs"].fillna(0).astype(int), num["d_fused_is_reference"].fillna(False))]
        if c == f"probe_{weak}" and np.isfinite(alone_probe):
            shown[f"{weak} probe alone"] = f"{alone_probe:.3f}"
        if weak_cols and c == weak_cols[-1]:
            k = f"d_{weak}_measure"
            shown[f"Δ {names[c]} vs joint"] = [format_delta(*a) for a in zip(num[f"{k}_delta"], num[f"{k}_low"], num[f"{k}_high"],
                                                                               num[f"{k}_n_pairs"].fillna(0).astype(int), num[f"{k}_is_reference"].fillna(False))]
    if weak and f"acc_{weak}" in heads and np.isfinite(alone_acc):
        shown.insert(list(shown.columns).index(f"{weak} head") + 1, f"{weak} alone", f"{alone_acc:.3f}")
    return num, shown
