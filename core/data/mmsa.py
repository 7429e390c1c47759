"""CMU-MOSI / CMU-MOSEI / CH-SIMS from the MMSA feature pickles (``aligned_50.pkl``, ``unaligned_50.pkl``).

The file is a pickle (thuiar/MMSA): ``{split: {"text", "audio", "vision": (N, L, D) float
arrays, "regression_labels": (N,), "audio_lengths", "vision_lengths": (N,) optional,
"id", "raw_text", ...}}`` with splits ``train``, ``valid``, ``test``. Unpickling can run
code, so it only happens with ``data.allow_pickle`` (``--allow-pickle``) and always warns.

As MMSA does, ``-inf`` in the audio features (log of zero energy in COVAREP) is set to 0;
any other NaN/inf is an error. Lengths: ``<m>_lengths`` when present, else the full
padded length (aligned files are word-aligned to ``L``). Each modality is a ``sequence``
(length-aware GRU); the task is regression on the sentiment score with MOSI's metrics
(Acc-2, Acc-7, F1, MAE, Pearson r; :func:`modalscope.metrics.regression_metrics`). The label
range is [-3, 3] for MOSI/MOSEI and [-1, 1] for CH-SIMS.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from modalscope.data.arrays import bundle_from_arrays, raw_split_arrays, warn_pickle
from modalscope.data.base import SPLITS, DatasetBundle, DatasetParams, DatasetSource, register_dataset
from modalscope.errors import DataError

MMSA_MODALITIES = ("text", "audio", "vision")
LABEL_RANGE = {"mosi": (-3.0, 3.0), "mosei": (-3.0, 3.0), "sims": (-1.0, 1.0)}


class MosiParams(DatasetParams):
    name: Literal["mosi"] = "mosi"
    path: str = Field(..., min_length=1, description="MMSA pickle, e.g. aligned_50.pkl (--data-path FILE).")
    variant: Literal["mosi", "mosei", "sims"] = Field("mosi", description="Which dataset the pickle holds (sets the label range).")
    modalities: list[Literal["text", "audio", "vision"]] = Field(["text", "audio", "vision"], min_length=1, description="Modalities to use.")
    label_key: str = Field("regression_labels", min_length=1, description="Label array per split.")
    allow_pickle: bool = Field(False, description="Allow unpickling the file (trusted files only); required for MMSA pickles.")


def load_mmsa(params: MosiParams) -> dict:
    p = Path(params.path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    if not params.allow_pickle:
        raise DataError(f"{p}: is a pickle; unpickling can run code: pass --allow-pickle (data.allow_pickle=true) only if you trust this file")
    warn_pickle(p)
    try:
        with open(p, "rb") as f:
            data = pickle.load(f)  # noqa: S301 - opt-in via allow_pickle, warned above
    except Exception as e:  # noqa: BLE001 - any unreadable pickle is one line
        raise DataError(f"{p}: cannot unpickle: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from None
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{p}: not an MMSA feature file (expected train/valid/test sections, found: {keys})")
    return data


def gather(params: MosiParams, data: dict) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Concatenate the splits into whole-dataset arrays (+ a split column) for validation."""
    src = params.path
    arrays: dict[str, list] = {m: [] for m in params.modalities}
    lengths: dict[str, list] = {m: [] for m in params.modalities}
    labels, split, ids = [], [], []
    for s in SPLITS:
        part = data.get(s)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise DataError(f"{src}: section {s!r} is a {type(part).__name__}, expected a dict of arrays")
        if params.label_key not in part:
            raise DataError(f"{src}: split {s!r} has no {params.label_key!r} (has: {', '.join(map(str, part))})")
        y = np.asarray(part[params.label_key], dtype=np.float64).reshape(-1)
        n = len(y)
        for m in params.modalities:
            if m not in part:
                raise DataError(f"{src}: split {s!r} has no modality {m!r} (has: {', '.join(map(str, part))})")
            a = np.asarray(part[m])
            if a.ndim != 3:
                raise DataError(f"{src}: {s}/{m} must be (N, L, D), got shape {a.shape}")
            if len(a) != n:
                raise DataError(f"{src}: mismatched lengths: {s}/{m} has {len(a)} rows, {s}/{params.label_key} has {n}")
            if arrays[m] and a.shape[1:] != arrays[m][0].shape[1:]:
                raise DataError(f"{src}: {s}/{m} has shape {a.shape[1:]} per sample, other splits {arrays[m][0].shape[1:]}")
            a = a.astype(np.float32, copy=True)
            if m == "audio":
                a[np.isneginf(a)] = 0.0
            arrays[m].append(a)
            ln = part.get(f"{m}_lengths")
            ln = np.full(n, a.shape[1]) if ln is None else np.asarray(ln).reshape(-1)
            if len(ln) != n:
                raise DataError(f"{src}: mismatched lengths: {s}/{m}_lengths has {len(ln)} entries, {s}/{params.label_key} has {n}")
            lengths[m].append(ln)
        labels.append(y)
        split += [s] * n
        sid = part.get("id")
        ids += [str(v) for v in sid] if sid is not None and len(sid) == n else [f"{s}_{i}" for i in range(n)]
    return (
        {m: np.concatenate(v) for m, v in arrays.items()},
        np.concatenate(labels),
        np.asarray(split),
        {m: np.concatenate(v) for m, v in lengths.items()},
        np.asarray(ids),
    )


@register_dataset("mosi")
class Mosi(DatasetSource):
    Params = MosiParams

    @classmethod
    def modalities(cls, params: MosiParams) -> list[str]:
        return [m for m in MMSA_MODALITIES if m in params.modalities]

    @classmethod
    def build(cls, params: MosiParams) -> DatasetBundle:
        data = load_mmsa(params)
        arrays, y, split, lengths, ids = gather(params, data)
        lo, hi = LABEL_RANGE[params.variant]
        finite = y[np.isfinite(y)]
        if len(finite) and (finite.min() < lo or finite.max() > hi):
            v = finite.min() if finite.min() < lo else finite.max()
            raise DataError(f"{params.path}: label {v:g} is out of range [{lo:g}, {hi:g}] for {params.variant}")
        return bundle_from_arrays(
            params.path, arrays, y, split, task="regression", modalities=cls.modalities(params), sample_id=ids,
            lengths=lengths, kinds={m: "sequence" for m in arrays}, info={"variant": params.variant},
        )

    @classmethod
    def inspect_raw(cls, params: MosiParams):
        arrays, y, split, _, _ = gather(params, load_mmsa(params))
        return raw_split_arrays(arrays, y, split)
