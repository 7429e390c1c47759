"""Pure table helpers for the pages: config flattening and diffs, sweep grouping, final metrics.

No Streamlit and no store access here: frames and dicts in, frames out, so every rule the
pages apply (what a "group" is, how a gap to the Bayes ceiling is computed) is unit-tested.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np
import pandas as pd

# Config paths that never define an experiment (they differ between seeds/copies of one setting).
NON_EXPERIMENT = ("name", "runs_dir", "seed", "log.", "tags.", "device", "schema_version")


MISSING = "—"


def fmt_values(values, digits: int = 3) -> list[str]:
    """Numbers as fixed-decimal text and anything missing (None, NaN, non-numeric) as "—"."""
    num = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
    return [MISSING if pd.isna(v) else f"{v:.{digits}f}" for v in num]


def flatten_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` → ``{"optim.lr": 0.1}``; lists and empty dicts stay leaves."""
    out: dict[str, Any] = {}
    for k, v in (cfg or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


def _cell(v: Any) -> str:
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return "" if v is None else str(v)


def config_diff(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B", include_all: bool = False) -> pd.DataFrame:
    """Rows ``field, <name_a>, <name_b>`` for every dotted field whose values differ (or all)."""
    fa, fb = flatten_config(a), flatten_config(b)
    rows = []
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k, "—"), fb.get(k, "—")
        if include_all or _cell(va) != _cell(vb):
            rows.append({"field": k, name_a: _cell(va), name_b: _cell(vb)})
    if name_a == name_b:
        name_b = name_b + " (2)"
    return pd.DataFrame(rows, columns=["field", name_a, name_b])


def method_label(cfg: dict[str, Any]) -> str:
    m = cfg.get("method") or {}
    name = m.get("name", "?")
    return f"unimodal:{m.get('modality')}" if name == "unimodal" else name


def swept_fields(cfgs: Iterable[dict[str, Any]]) -> list[str]:
    """The union of every run's ``tags.swept`` (comma-separated dotted config paths)."""
    out: list[str] = []
    for c in cfgs:
        raw = (c.get("tags") or {}).get("swept", "") or ""
        for f in (raw if isinstance(raw, list) else str(raw).split(",")):
            f = str(f).strip()
            if f and f not in out:
                out.append(f)
    return out


def varying_fields(cfgs: list[dict[str, Any]]) -> list[str]:
    """Dotted fields (excluding seed, names and logging) whose value differs across configs."""
    flat = [flatten_config(c) for c in cfgs]
    keys = sorted(set().union(*flat)) if flat else []
    out = []
    for k in keys:
        if k.startswith(NON_EXPERIMENT) or k in NON_EXPERIMENT:
            continue
        if len({_cell(f.get(k)) for f in flat}) > 1:
            out.append(k)
    return out


def add_config_columns(runs: pd.DataFrame, configs: dict[str, dict], fields: list[str]) -> pd.DataFrame:
    """Add one column per dotted config field (values as strings for lists) to a runs table keyed by ``key``."""
    runs = runs.copy()
    for f in fields:
        if f in runs.columns:
            continue
        vals = []
        for k in runs["key"]:
            v = flatten_config(configs.get(k, {})).get(f)
            vals.append(_cell(v) if isinstance(v, (list, dict)) else v)
        runs[f] = vals
    return runs


def group_labels(runs: pd.DataFrame, by: list[str]) -> pd.Series:
    """Label each run by the values of ``by`` columns, e.g. ``ogm_ge · imbalanced``."""
    if not by:
        return runs["name"].astype(str)
    cols = []
    for c in by:  # plain lists: a row-wise DataFrame.agg costs ~0.5 ms per run
        vals = ["" if v is None else str(v) for v in runs[c].tolist()]
        missing = "no sweep" if c == "sweep" else "—"
        cols.append([missing if v in ("", "None", "nan") else v for v in vals])
    return pd.Series([" · ".join(t) for t in zip(*cols)], index=runs.index, dtype=object)


def final_metrics_table(runs: pd.DataFrame, group_col: str = "group") -> pd.DataFrame:
    """Mean ± std over the runs of each group: fused and per-modality test accuracy, the gap to
    the Bayes ceiling (``bayes_fused − acc_fused``, when known) and wall time.

    ``runs``: one row per run with ``group``, ``acc_*`` columns, optional ``bayes_fused`` and
    ``wall_s``. Returns one row per group with ``n`` and ``<metric> mean``/``<metric> std``.
    """
    if runs.empty:
        return pd.DataFrame()
    d = runs.copy()
    if "bayes_fused" in d and "acc_fused" in d:
        d["gap_to_bayes"] = pd.to_numeric(d["bayes_fused"], errors="coerce") - pd.to_numeric(d["acc_fused"], errors="coerce")
    metrics = sorted(c for c in d.columns if c.startswith("acc_"))
    if "acc_fused" in metrics:
        metrics.remove("acc_fused")
        metrics.insert(0, "acc_fused")
    metrics += [c for c in ("gap_to_bayes", "wall_s") if c in d]
    rows = []
    for grp, g in d.groupby(group_col, sort=True):
        row: dict[str, Any] = {group_col: grp, "n": len(g)}
        for m in metrics:
            v = pd.to_numeric(g[m], errors="coerce").dropna()
            row[f"{m} mean"] = float(v.mean()) if len(v) else np.nan
            row[f"{m} std"] = float(v.std(ddof=0)) if len(v) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def format_mean_std(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Collapse ``<m> mean`` / ``<m> std`` pairs into one ``<m>`` column reading ``0.812 ± 0.004``."""
    out = table[[c for c in table.columns if not c.endswith((" mean", " std"))]].copy()
    for c in table.columns:
        if c.endswith(" mean"):
            m = c[: -len(" mean")]
            mean, std = table[c], table.get(f"{m} std")
            fmt = "{:.1f}" if m == "wall_s" else f"{{:.{digits}f}}"
            out[m] = [
                "—" if pd.isna(a) else (fmt.format(a) + ("" if std is None or pd.isna(b) or n == 1 else f" ± {fmt.format(b)}"))
                for a, b, n in zip(mean, std if std is not None else [np.nan] * len(mean), table["n"])
            ]
    return out


def find_runs(runs: pd.DataFrame, configs: dict[str, dict], method: str | None = None, preset: str | None = None,
              modality: str | None = None, finished_only: bool = True) -> pd.DataFrame:
    """Runs whose config matches ``method.name`` (and ``method.modality``) and ``data.preset``."""
    keep = []
    for _, r in runs.iterrows():
        cfg = configs.get(r["key"], {})
        m = cfg.get("method") or {}
        d = cfg.get("data") or {}
        if method is not None and m.get("name") != method:
            continue
        if modality is not None and m.get("modality") != modality:
            continue
        if preset is not None and d.get("preset") != preset:
            continue
        if finished_only and r.get("status") != "finished":
            continue
        keep.append(r["key"])
    return runs[runs["key"].isin(keep)]


def describe_thinning(thinned: Any) -> str:
    """Run meta ``thinned`` (a sentence, or a mapping of table → what was kept) as one line."""
    if not thinned:
        return ""
    if isinstance(thinned, dict):
        return "; ".join(f"{k}: {v}" for k, v in thinned.items())
    if isinstance(thinned, list):
        return "; ".join(map(str, thinned))
    return str(thinned)


def default_live_run(runs: pd.DataFrame) -> str | None:
    """The run Live opens when none is asked for: the user's newest running run, else the
    user's newest run (runs root, by start time), else the gallery's first; None when empty."""
    if runs.empty:
        return None
    start = pd.to_numeric(runs.get("start_time"), errors="coerce").fillna(-1.0)
    d = runs.assign(_start=start)
    mine = d[d["source"] == "runs"].sort_values("_start", ascending=False)
    for pool in (mine[mine["status"] == "running"], mine, d[d["status"] == "running"].sort_values("_start", ascending=False)):
        if not pool.empty:
            return str(pool["key"].iloc[0])
    return str(d["key"].iloc[0])
