"""In-memory feature arrays → a validated :class:`DatasetBundle` (shared by npz, Parquet, mfeat, MMSA).

Users' most frequent complaint in this field is preprocessing that silently differs, so
every check here fails loudly with one line naming the file and the problem
(:class:`modalscope.errors.DataError`): mismatched row counts, non-numeric or non-finite
features, labels that are not class indices (or not finite for regression), unknown split
names, empty train/test splits and unknown modality names.

The input kind of a modality follows from the shape of one sample: ``(D,)`` → ``vector``
(MLP), ``(L, D)`` → ``sequence`` (GRU, lengths from ``<m>_len`` when given),
``(C, H, W)`` → ``spectrogram`` (2-D CNN), ``(T, C, H, W)`` → ``frames``; ``kinds``
overrides this (e.g. a ``(F, T)`` spectrogram).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from modalscope.data.base import SPLITS, DatasetBundle, DatasetParams, TensorMultimodalDataset
from modalscope.errors import DataError

RESERVED = ("label", "split", "sample_id", "class_names")
KIND_BY_NDIM = {1: "vector", 2: "sequence", 3: "spectrogram", 4: "frames"}
KINDS = ("vector", "sequence", "spectrogram", "frames")


class LengthTensorDataset(TensorMultimodalDataset):
    """Tensor dataset that also carries per-sample sequence lengths as ``<m>_len`` batch keys."""

    def __init__(self, tensors: dict[str, torch.Tensor], labels: torch.Tensor, lengths: dict[str, torch.Tensor]):
        super().__init__(tensors, labels)
        self.lengths = lengths

    def get(self, i: int) -> dict:
        out = super().get(i)
        for m, t in self.lengths.items():
            out[f"{m}_len"] = t[i]
        return out

    def batch(self, idx: torch.Tensor) -> dict:
        out = super().batch(idx)
        for m, t in self.lengths.items():
            out[f"{m}_len"] = t[idx]
        return out


def warn_pickle(path: str | Path) -> None:
    """Unpickling runs code from the file; it is opt-in and always announced."""
    warnings.warn(f"unpickling {path} (allow_pickle=true): only do this with files you trust", UserWarning, stacklevel=3)


def nonfinite_count(a: np.ndarray) -> int:
    if a.dtype.kind not in "fc":
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def require_numeric(src: str, name: str, a: np.ndarray) -> None:
    if a.dtype.kind not in "biuf":
        raise DataError(f"{src}: modality {name!r} is not numeric (dtype {a.dtype})")


def require_finite(src: str, what: str, a: np.ndarray) -> None:
    bad = nonfinite_count(a)
    if bad:
        flat = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1) if a.ndim > 1 else ~np.isfinite(a)
        row = int(np.flatnonzero(flat)[0])
        raise DataError(f"{src}: {what} has {bad} NaN/inf values (first in row {row})")


def split_names(src: str, split: np.ndarray) -> np.ndarray:
    """Split column as a str array, each value one of train|valid|test."""
    s = np.asarray(split)
    if s.dtype.kind == "S":
        s = np.char.decode(s, "utf-8")
    s = s.astype(str)
    bad = sorted(set(np.unique(s).tolist()) - set(SPLITS))
    if bad:
        raise DataError(f"{src}: split has values {', '.join(map(repr, bad[:3]))}; allowed: train, valid, test")
    return s


def class_labels(src: str, label: np.ndarray, n_classes: int | None) -> tuple[np.ndarray, int]:
    """Integer class indices in ``[0, n_classes)``; returns (labels, n_classes)."""
    y = np.asarray(label)
    if y.ndim != 1:
        raise DataError(f"{src}: label must be one value per sample, got shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{src}: label is not numeric (dtype {y.dtype}); store class indices 0..K-1")
    require_finite(src, "label", y)
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        raise DataError(f"{src}: label has non-integer values; use task=regression for real-valued targets")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{src}: label {int(y.min())} is out of range (class indices start at 0)")
    k = n_classes if n_classes is not None else (int(y.max()) + 1 if len(y) else 0)
    if len(y) and y.max() >= k:
        raise DataError(f"{src}: label {int(y.max())} is out of range for {k} classes (0..{k - 1})")
    if k < 2:
        raise DataError(f"{src}: classification needs at least 2 classes, found {k}")
    return y, k


def regression_labels(src: str, label: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
    y = np.asarray(label)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "biuf":
        raise DataError(f"{src}: regression label must be one number per sample, got shape {y.shape} dtype {y.dtype}")
    y = y.astype(np.float32)
    require_finite(src, "label", y)
    if bounds is not None and len(y) and (y.min() < bounds[0] or y.max() > bounds[1]):
        v = y.min() if y.min() < bounds[0] else y.max()
        raise DataError(f"{src}: label {float(v):g} is out of range [{bounds[0]:g}, {bounds[1]:g}]")
    return y


def pick_modalities(src: str, available: list[str], wanted: list[str] | None) -> list[str]:
    if not available:
        raise DataError(f"{src}: no modality arrays found (arrays other than {', '.join(RESERVED)})")
    if not wanted:
        return list(available)
    missing = [m for m in wanted if m not in available]
    if missing:
        raise DataError(f"{src}: modality {missing[0]!r} not found (has: {', '.join(available)})")
    return list(wanted)


def standardize(tensors: dict[str, dict[str, np.ndarray]], modalities: list[str]) -> dict[str, dict[str, float]]:
    """z-score every feature with the training split's mean and std (std 0 → 1), in place."""
    stats = {}
    for m in modalities:
        tr = tensors["train"][m].astype(np.float64)
        mu, sd = tr.mean(0), tr.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        for split in tensors:
            tensors[split][m] = ((tensors[split][m] - mu) / sd).astype(np.float32)
        stats[m] = {"mean_abs": float(np.abs(mu).mean()), "std_mean": float(sd.mean())}
    return stats


def bundle_from_arrays(
    src: str,
    arrays: dict[str, np.ndarray],
    label: np.ndarray,
    split: np.ndarray,
    *,
    task: str = "classification",
    modalities: list[str] | None = None,
    n_classes: int | None = None,
    class_names: list[str] | None = None,
    sample_id: np.ndarray | None = None,
    lengths: dict[str, np.ndarray] | None = None,
    kinds: dict[str, str] | None = None,
    do_standardize: bool = False,
    info: dict[str, Any] | None = None,
) -> DatasetBundle:
    """Validate whole-dataset arrays and split them into in-memory train/valid/test datasets."""
    mods = pick_modalities(src, list(arrays), modalities)
    label = np.asarray(label)
    n = len(label)
    for m in mods:
        a = arrays[m]
        if a.ndim < 2:
            raise DataError(f"{src}: modality {m!r} must have one row per sample, got shape {a.shape}")
        if len(a) != n:
            raise DataError(f"{src}: mismatched lengths: modality {m!r} has {len(a)} rows, label has {n}")
        require_numeric(src, m, a)
        require_finite(src, f"modality {m!r}", a)
    split = np.asarray(split)
    if len(split) != n:
        raise DataError(f"{src}: mismatched lengths: split has {len(split)} rows, label has {n}")
    if sample_id is not None and len(sample_id) != n:
        raise DataError(f"{src}: mismatched lengths: sample_id has {len(sample_id)} rows, label has {n}")
    s = split_names(src, split)
    if task == "classification":
        y, k = class_labels(src, label, n_classes)
        names = list(class_names) if class_names is not None else [f"class{i}" for i in range(k)]
        if len(names) != k:
            raise DataError(f"{src}: {len(names)} class names for {k} classes")
    else:
        y, names = regression_labels(src, label), []
    for req in ("train", "test"):
        if not (s == req).any():
            raise DataError(f"{src}: split {req!r} is empty (every dataset needs train and test rows)")
    kinds = dict(kinds or {})
    for m in mods:
        kinds.setdefault(m, KIND_BY_NDIM.get(arrays[m].ndim - 1, "vector"))
        if kinds[m] not in KINDS:
            raise DataError(f"{src}: unknown input kind {kinds[m]!r} for {m!r}; choose from {', '.join(KINDS)}")
    lengths = {m: np.asarray(v) for m, v in (lengths or {}).items() if m in mods}
    for m, ln in lengths.items():
        if ln.shape != (n,):
            raise DataError(f"{src}: {m}_len must have one length per sample, got shape {ln.shape}")
        seq = arrays[m].shape[1]
        if len(ln) and (ln.min() < 0 or ln.max() > seq):
            bad = ln.min() if ln.min() < 0 else ln.max()
            raise DataError(f"{src}: {m}_len has length {int(bad)} outside 0..{seq}")
    parts: dict[str, dict[str, np.ndarray]] = {}
    rows: dict[str, np.ndarray] = {}
    for name in SPLITS:
        r = np.flatnonzero(s == name)
        if len(r):
            rows[name] = r
            parts[name] = {m: arrays[m][r].astype(np.float32) for m in mods}
    if do_standardize:
        standardize(parts, mods)
    ydtype = np.int64 if task == "classification" else np.float32
    splits = {}
    for name, r in rows.items():
        tensors = {m: torch.from_numpy(np.ascontiguousarray(parts[name][m])) for m in mods}
        yt = torch.from_numpy(y[r].astype(ydtype))
        if lengths:
            lt = {m: torch.from_numpy(ln[r].astype(np.int64)) for m, ln in lengths.items()}
            splits[name] = LengthTensorDataset(tensors, yt, lt)
        else:
            splits[name] = TensorMultimodalDataset(tensors, yt)
    extra = dict(info or {})
    extra["source"] = src
    if sample_id is not None:
        sid = np.asarray(sample_id)
        extra["sample_id"] = {name: sid[r].astype(str).tolist() for name, r in rows.items()}
    return DatasetBundle(
        splits=splits,
        modalities=mods,
        kinds={m: kinds[m] for m in mods},
        shapes={m: tuple(int(d) for d in arrays[m].shape[1:]) for m in mods},
        task=task,
        class_names=names,
        info=extra,
    )


def raw_split_arrays(arrays: dict[str, np.ndarray], label: np.ndarray, split: np.ndarray) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """Unvalidated per-split view of whole-dataset arrays (for ``data check`` after a failure)."""
    s = np.asarray(split).astype(str)
    out = {}
    for name in sorted(set(s.tolist()), key=lambda v: (SPLITS.index(v) if v in SPLITS else 9, v)):
        r = np.flatnonzero(s == name)
        out[name] = ({m: a[r] for m, a in arrays.items() if len(a) == len(s)}, np.asarray(label)[r] if len(label) == len(s) else np.asarray(label))
    return out



class FeatureFileParams(DatasetParams):
    """Fields shared by the generic feature-file sources (npz, Parquet)."""

    path: str = Field(..., min_length=1, description="Feature file (--data-path FILE).")
    modalities: list[str] | None = Field(None, description="Use only these modality arrays (default: all).")
    task: Literal["classification", "regression"] = Field("classification", description="Label type.")
    n_classes: int | None = Field(None, ge=2, le=100_000, description="Number of classes (default: class_names or max label + 1).")
    kinds: dict[str, Literal["vector", "sequence", "spectrogram", "frames"]] | None = Field(
        None, description="Input kind per modality (default from the sample shape)."
    )
    standardize: bool = Field(False, description="z-score features with train-split statistics.")
    allow_pickle: bool = Field(False, description="Allow pickled content (trusted files only).")
