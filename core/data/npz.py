"""Generic pre-extracted features in one ``.npz`` file: how anyone brings their own data.

Layout: one array per modality ``(N, ...)``, ``label`` ``(N,)`` (class indices, class
names, or real values with ``task=regression``), ``split`` ``(N,)`` with
values ``train|valid|test``, optional ``sample_id`` ``(N,)``, ``class_names`` ``(K,)`` and
``<m>_len`` ``(N,)`` sequence lengths. Modality names are the array names. Arrays are read
with ``allow_pickle=False`` unless ``data.allow_pickle`` is set (object arrays are
pickles).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from modalscope.data.arrays import RESERVED, FeatureFileParams, bundle_from_arrays, raw_split_arrays, warn_pickle
from modalscope.data.base import DatasetBundle, DatasetSource, register_dataset
from modalscope.errors import DataError

class NpzParams(FeatureFileParams):
    name: Literal["npz"] = "npz"


def read_npz(path: str, allow_pickle: bool) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with np.load(p, allow_pickle=allow_pickle) as z:
            if allow_pickle:
                warn_pickle(p)
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(f"{p}: holds object arrays (a pickle); pass --allow-pickle only if you trust this file") from None
        raise DataError(f"{p}: cannot read as .npz: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p}: cannot read as .npz: {type(e).__name__}: {e}") from None


def split_fields(src: str, raw: dict[str, np.ndarray]):
    """(modality arrays, label, split, sample_id, class_names, lengths) from a flat array dict."""
    for req in ("label", "split"):
        if req not in raw:
            raise DataError(f"{src}: no {req!r} array (has: {', '.join(raw) or 'nothing'})")
    lengths = {k[: -len("_len")]: v for k, v in raw.items() if k.endswith("_len") and k[: -len("_len")] in raw}
    arrays = {k: v for k, v in raw.items() if k not in RESERVED and not (k.endswith("_len") and k[: -len("_len")] in raw)}
    names = raw.get("class_names")
    names = [str(c) for c in np.asarray(names).astype(str)] if names is not None else None
    return arrays, raw["label"], raw["split"], raw.get("sample_id"), names, lengths


def named_labels(src: str, label: np.ndarray, names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Class-name labels → indices into ``names`` (default: the sorted distinct labels)."""
    text = np.char.decode(label, "utf-8") if label.dtype.kind == "S" else label.astype(str)
    names = names or sorted(set(text.tolist()))
    index = {c: i for i, c in enumerate(names)}
    unknown = sorted(set(text.tolist()) - set(index))
    if unknown:
        raise DataError(f"{src}: label {unknown[0]!r} is not one of class_names ({', '.join(names[:8])})")
    return np.array([index[t] for t in text.tolist()], dtype=np.int64), names


def build_from_raw(src: str, params, raw: dict[str, np.ndarray]) -> DatasetBundle:
    arrays, label, split, sid, names, lengths = split_fields(src, raw)
    label = np.asarray(label)
    if params.task == "classification" and label.dtype.kind in "US":
        label, names = named_labels(src, label, names)
    k = params.n_classes if params.n_classes is not None else (len(names) if names else None)
    return bundle_from_arrays(
        src, arrays, label, split, task=params.task, modalities=params.modalities, n_classes=k,
        class_names=names if params.task == "classification" else None,
        sample_id=sid, lengths=lengths, kinds=params.kinds, do_standardize=params.standardize,
    )


@register_dataset("npz")
class Npz(DatasetSource):
    Params = NpzParams

    @classmethod
    def modalities(cls, params) -> list[str] | None:
        return list(params.modalities) if params.modalities else None

    @classmethod
    def build(cls, params) -> DatasetBundle:
        return build_from_raw(params.path, params, read_npz(params.path, params.allow_pickle))

    @classmethod
    def inspect_raw(cls, params):
        arrays, label, split, *_ = split_fields(params.path, read_npz(params.path, params.allow_pickle))
        return raw_split_arrays(arrays, label, split)
