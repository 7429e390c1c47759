"""Per-split metrics from stacked predictions (classification accuracy; regression metrics)."""

from __future__ import annotations

import numpy as np
import torch


def classification_metrics(split: str, fused: np.ndarray, per_modality: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    out = {f"acc/{split}/fused": float((fused.argmax(1) == y).mean()) if len(y) else float("nan")}
    for m, z in per_modality.items():
        out[f"acc/{split}/{m}"] = float((z.argmax(1) == y).mean()) if len(y) else float("nan")
    return out


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Support-weighted mean of per-class F1 (sklearn's ``average="weighted"``); classes of ``y_true``."""
    if len(y_true) == 0:
        return float("nan")
    total = 0.0
    for c in np.unique(y_true):
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        fp = float(np.sum((y_pred == c) & (y_true != c)))
        fn = float(np.sum((y_pred != c) & (y_true == c)))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
        total += f1 * np.mean(y_true == c)
    return float(total)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; NaN when either side is constant (undefined)."""
    if len(a) < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def regression_metrics(split: str, fused: np.ndarray, per_modality: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """MOSI's standard metrics (as in thuiar/MMSA) for the fused prediction and each modality.

    * ``acc2``: over samples with non-zero label, ``mean(1[ŷ > 0] = 1[y > 0])``;
    * ``f1``: support-weighted F1 of the same positive/negative decision (non-zero labels);
    * ``acc7``: ``mean(round(clip(ŷ, −3, 3)) = round(clip(y, −3, 3)))`` (7 classes −3..3);
    * ``mae``: ``mean |ŷ − y|``; ``corr``: Pearson r between ŷ and y.

    ``acc/<split>/<key>`` repeats Acc-2 so accuracy-based views work for regression too.
    """
    out: dict[str, float] = {}
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    nz = y != 0
    for key, pred in [("fused", fused), *per_modality.items()]:
        p = np.asarray(pred, dtype=np.float64).reshape(-1)
        empty = len(y) == 0
        out[f"acc2/{split}/{key}"] = float(((p[nz] > 0) == (y[nz] > 0)).mean()) if nz.any() else float("nan")
        out[f"f1/{split}/{key}"] = weighted_f1(y[nz] > 0, p[nz] > 0) if nz.any() else float("nan")
        out[f"acc7/{split}/{key}"] = float("nan") if empty else float((np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3))).mean())
        out[f"mae/{split}/{key}"] = float("nan") if empty else float(np.abs(p - y).mean())
        out[f"corr/{split}/{key}"] = pearson(p, y)
        out[f"acc/{split}/{key}"] = out[f"acc2/{split}/{key}"]
    return out


def split_metrics(task: str, split: str, fused: np.ndarray, per_modality: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    fn = regression_metrics if task == "regression" else classification_metrics
    return fn(split, fused, per_modality, y)


class RunningAccuracy:
    """``acc/train/*``: accuracy of the epoch's training forward passes (train mode, no extra pass).

    Hits are accumulated on the device in one small tensor (one fused kernel chain per step,
    no host sync) and read once at the end of the epoch.
    """

    def __init__(self, task: str):
        self.task = task
        self.keys: list[str] = []
        self.hits: torch.Tensor | None = None
        self.n = 0

    def update(self, fused: torch.Tensor, logits: list[torch.Tensor], names: list[str], y: torch.Tensor) -> None:
        preds = [fused, *(z for z in logits if z.shape == fused.shape)]
        if self.hits is None:
            self.keys = ["fused", *(m for m, z in zip(names, logits) if z.shape == fused.shape)]
        stacked = torch.stack(preds)
        if self.task == "regression":
            nz = y != 0
            hit = (((stacked.reshape(len(preds), -1) > 0) == (y > 0)) & nz).sum(1)
            self.n += int(nz.sum())
        else:
            hit = (stacked.argmax(-1) == y).sum(1)
            self.n += len(y)
        self.hits = hit if self.hits is None else self.hits + hit

    def compute(self) -> dict[str, float]:
        if self.n == 0 or self.hits is None:
            return {}
        return {f"acc/train/{k}": v / self.n for k, v in zip(self.keys, self.hits.tolist())}
