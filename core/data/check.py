"""``modalscope data check``: say exactly what a dataset holds before training on it.

:func:`check_dataset` is a pure function of the config (the dashboard's Launch page calls
it before launching on user data); it opens the dataset with the same loader training
uses and reports, per split, the sample count, class counts (label range for
regression) and, per modality, the sample shape, dtype and NaN/inf count, plus the first
problems found. Lazily decoded datasets (wav/JPEG layouts) are decoded item by item so a
broken file anywhere is found, not only the first one. When the loader refuses the files,
sources that can (npz, Parquet, MMSA) still report the raw arrays so the cause is visible.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import torch

from modalscope.data.arrays import nonfinite_count
from modalscope.data.base import DatasetBundle, TensorMultimodalDataset, get_dataset
from modalscope.errors import DataError


def _modality_stats(a: np.ndarray) -> dict[str, Any]:
    return {"shape": list(a.shape[1:]), "dtype": str(a.dtype), "nonfinite": nonfinite_count(a)}


def _label_stats(task: str, y: np.ndarray, class_names: list[str] | None) -> dict[str, Any]:
    if len(y) == 0:
        return {}
    if task == "classification":
        vals, counts = np.unique(y.astype(np.int64), return_counts=True)
        names = class_names or []
        return {"classes": {(names[v] if 0 <= v < len(names) else str(v)): int(c) for v, c in zip(vals.tolist(), counts.tolist())}}
    yf = y.astype(np.float64)
    return {"label": {"min": float(np.nanmin(yf)), "max": float(np.nanmax(yf)), "mean": float(np.nanmean(yf))}}


def _scan_lazy(ds, modalities: list[str], max_items: int | None, problems: list[str], max_problems: int) -> tuple[dict, np.ndarray]:
    stats: dict[str, dict[str, Any]] = {}
    labels = []
    n = len(ds) if max_items is None else min(len(ds), max_items)
    for i in range(n):
        try:
            item = ds[i]
        except DataError as e:
            if len(problems) < max_problems:
                problems.append(str(e))
            continue
        labels.append(int(item["label"]))
        for m in modalities:
            x = item[m].numpy() if isinstance(item[m], torch.Tensor) else np.asarray(item[m])
            s = stats.setdefault(m, {"shape": list(x.shape), "dtype": str(x.dtype), "nonfinite": 0})
            s["nonfinite"] += nonfinite_count(x[None])
            if list(x.shape) != s["shape"] and len(problems) < max_problems:
                problems.append(f"split item {i}: {m} shape {list(x.shape)} differs from {s['shape']}")
    return stats, np.asarray(labels)


def _from_bundle(bundle: DatasetBundle, max_items: int | None, max_problems: int) -> tuple[dict, list[str], list[str]]:
    splits: dict[str, Any] = {}
    problems: list[str] = []
    notes: list[str] = []
    for name, ds in bundle.splits.items():
        if isinstance(ds, TensorMultimodalDataset):
            mods = {m: _modality_stats(ds.tensors[m].numpy()) for m in bundle.modalities}
            y = ds.labels.numpy()
        else:
            mods, y = _scan_lazy(ds, bundle.modalities, max_items, problems, max_problems)
        entry = {"n": len(ds), "modalities": mods, **_label_stats(bundle.task, y, bundle.class_names)}
        if max_items is not None and not isinstance(ds, TensorMultimodalDataset) and len(ds) > max_items:
            entry["scanned"] = max_items
        splits[name] = entry
        if bundle.task == "classification" and "classes" in entry:
            missing = [c for c in bundle.class_names if c not in entry["classes"]]
            if missing:
                notes.append(f"split {name!r} has no samples of {len(missing)} class(es): {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
    return splits, problems, notes


def _from_raw(raw: dict, task: str) -> dict:
    out = {}
    for name, (arrays, y) in raw.items():
        entry = {"n": int(len(y)), "modalities": {m: _modality_stats(np.asarray(a)) for m, a in arrays.items() if np.asarray(a).dtype.kind in "biufc"}}
        try:
            entry.update(_label_stats(task, np.asarray(y), None))
        except (TypeError, ValueError):
            pass
        out[name] = entry
    return out


def check_dataset(cfg, max_items: int | None = None, max_problems: int = 10) -> dict[str, Any]:
    """Report on ``cfg.data`` (a RunConfig, or a dataset params model): see the module docstring."""
    params = getattr(cfg, "data", cfg)
    source = get_dataset(params.name)
    report: dict[str, Any] = {"dataset": params.name, "path": getattr(params, "path", None), "ok": True, "problems": [], "notes": [], "splits": {}}
    try:
        bundle = source.build(params)
    except DataError as e:
        report["ok"] = False
        report["problems"].append(str(e))
        task = getattr(params, "task", "regression" if params.name == "mosi" else "classification")
        inspect = getattr(source, "inspect_raw", None)
        if inspect is not None:
            try:
                report["splits"] = _from_raw(inspect(params), task)
            except DataError as e2:
                if str(e2) != str(e):
                    report["problems"].append(str(e2))
        return report
    report.update(
        task=bundle.task,
        modalities=list(bundle.modalities),
        kinds=dict(bundle.kinds),
        shapes={m: list(s) for m, s in bundle.shapes.items()},
        class_names=list(bundle.class_names),
    )
    splits, problems, notes = _from_bundle(bundle, max_items, max_problems)
    report["splits"] = splits
    report["problems"] += problems
    report["notes"] += notes
    report["ok"] = not report["problems"]
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"dataset {report['dataset']}" + (f"  ({report['path']})" if report.get("path") else "")]
    if report.get("task"):
        kinds = ", ".join(f"{m} [{report['kinds'][m]} {tuple(report['shapes'][m])}]" for m in report["modalities"])
        lines.append(f"task {report['task']}; modalities {kinds}")
        if report["task"] == "classification":
            lines.append(f"{len(report['class_names'])} classes: {', '.join(report['class_names'][:12])}{' ...' if len(report['class_names']) > 12 else ''}")
    for name, s in report["splits"].items():
        scanned = f" (first {s['scanned']} decoded)" if "scanned" in s else ""
        lines.append(f"[{name}] {s['n']} samples{scanned}")
        if "classes" in s:
            lines.append("  classes: " + ", ".join(f"{k}={v}" for k, v in s["classes"].items()))
        if "label" in s:
            lb = s["label"]
            lines.append(f"  label: min {lb['min']:.3g}  max {lb['max']:.3g}  mean {lb['mean']:.3g}")
        for m, ms in s["modalities"].items():
            lines.append(f"  {m:<10} shape {tuple(ms['shape'])}  dtype {ms['dtype']}  NaN/inf {ms['nonfinite']}")
    for n in report.get("notes", []):
        lines.append(f"note: {n}")
    if report["problems"]:
        lines.append(f"{len(report['problems'])} problem(s):")
        lines += [f"  - {p}" for p in report["problems"]]
    else:
        lines.append("no problems found")
    return "\n".join(lines)


def cmd_data(args: argparse.Namespace) -> int:
    from modalscope.cli import config_from_args

    cfg = config_from_args(args)
    report = check_dataset(cfg, max_items=args.max_items)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    sys.stdout.flush()
    return 0 if report["ok"] else 1


def add_parser(subparsers) -> None:
    from modalscope.cli import _add_config_args

    d = subparsers.add_parser("data", help="inspect datasets")
    ds = d.add_subparsers(dest="data_cmd", required=True)
    c = ds.add_parser("check", help="per-split counts, shapes, dtypes, NaN/inf and the first problems of a dataset")
    _add_config_args(c)
    c.add_argument("--allow-pickle", action="store_true", help="allow loading pickled data files (trusted files only)")
    c.add_argument("--max-items", type=int, default=None, help="decode at most this many items per split (wav/JPEG layouts)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(fn=cmd_data)
