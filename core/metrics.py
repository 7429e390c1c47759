"""Per-split metrics from stacked predictions (classification accuracy; regression metrics)."""

from __future__ import annotations

import numpy as np


def classification_metrics(split: str, fused: np.ndarray, per_modality: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    out = {f"acc/{split}/fused": float((fused.argmax(1) == y).mean()) if len(y) else float("nan")}
    for m, z in per_modality.items():
        out[f"acc/{split}/{m}"] = float((z.argmax(1) == y).mean()) if len(y) else float("nan")
    return out


def regression_metrics(split: str, fused: np.ndarray, per_modality: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """MOSI-style: Acc-2 (non-zero labels, sign agreement) and MAE for fused and each modality."""
    out: dict[str, float] = {}
    for key, pred in [("fused", fused), *per_modality.items()]:
        p = pred.reshape(-1)
        nz = y != 0
        out[f"acc2/{split}/{key}"] = float(((p[nz] > 0) == (y[nz] > 0)).mean()) if nz.any() else float("nan")
        out[f"mae/{split}/{key}"] = float(np.abs(p - y).mean()) if len(y) else float("nan")
    out[f"acc/{split}/fused"] = out[f"acc2/{split}/fused"]
    for m in per_modality:
        out[f"acc/{split}/{m}"] = out[f"acc2/{split}/{m}"]
    return out


def split_metrics(task: str, split: str, fused: np.ndarray, per_modality: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    fn = regression_metrics if task == "regression" else classification_metrics
    return fn(split, fused, per_modality, y)
