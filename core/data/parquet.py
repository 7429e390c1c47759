"""Generic pre-extracted features in one Parquet file (same contract as :mod:`modalscope.data.npz`).

Columns: ``label``, ``split`` (``train|valid|test``), optional ``sample_id``; every other
column is a modality. A list column (fixed length, nested lists for more axes) is one
modality ``(N, L, ...)``; scalar columns named ``<m>.<i>`` are gathered, ordered by ``i``,
into modality ``<m>`` ``(N, D)``; any other scalar column is a modality of width 1.
Optional ``<m>_len`` integer columns give sequence lengths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import field_validator

from modalscope.data.arrays import FeatureFileParams, raw_split_arrays
from modalscope.data.base import DatasetBundle, DatasetSource, register_dataset
from modalscope.data.npz import build_from_raw, split_fields
from modalscope.errors import DataError

WIDE = re.compile(r"^(?P<m>.+)\.(?P<i>\d+)$")


class ParquetParams(FeatureFileParams):
    name: Literal["parquet"] = "parquet"

    @field_validator("allow_pickle")
    @classmethod
    def _no_pickle_in_parquet(cls, v: bool) -> bool:
        """Parquet stores typed columns, never pickled objects: accepting the flag would promise an effect it cannot have."""
        if v:
            raise ValueError("does not apply to Parquet (typed columns, nothing pickled); drop --allow-pickle")
        return v


def arrow_to_numpy(src: str, col: str, arr) -> np.ndarray:
    """Arrow array → dense numpy; nested fixed-length lists become extra axes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if arr.null_count:
            raise DataError(f"{src}: column {col!r} has {arr.null_count} empty (null) cells")
        lens = np.unique(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
        if len(lens) > 1:
            raise DataError(f"{src}: column {col!r} has lists of different lengths ({int(lens.min())}..{int(lens.max())})")
        width = int(lens[0]) if len(lens) else 0
        inner = arrow_to_numpy(src, col, arr.flatten())
        return inner.reshape(len(arr), width, *inner.shape[1:])
    return arr.to_numpy(zero_copy_only=False)


def read_parquet(path: str) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{p}: cannot read as Parquet: {str(e).splitlines()[0][:200]}") from None
    cols = {name: arrow_to_numpy(str(p), name, table.column(name).combine_chunks()) for name in table.column_names}
    out: dict[str, np.ndarray] = {}
    wide: dict[str, list[tuple[int, np.ndarray]]] = {}
    for name, a in cols.items():
        m = WIDE.match(name)
        if m and a.ndim == 1:
            wide.setdefault(m["m"], []).append((int(m["i"]), a))
        elif a.ndim == 1 and name not in ("label", "split", "sample_id") and not name.endswith("_len"):
            out[name] = a[:, None]
        else:
            out[name] = a
    for m, parts in wide.items():
        if m in out:
            raise DataError(f"{p}: modality {m!r} is both a column and {m}.<i> columns")
        parts.sort(key=lambda t: t[0])
        out[m] = np.stack([a for _, a in parts], axis=1)
    return out


@register_dataset("parquet")
class Parquet(DatasetSource):
    Params = ParquetParams

    @classmethod
    def modalities(cls, params) -> list[str] | None:
        return list(params.modalities) if params.modalities else None

    @classmethod
    def build(cls, params) -> DatasetBundle:
        return build_from_raw(params.path, params, read_parquet(params.path))

    @classmethod
    def inspect_raw(cls, params):
        arrays, label, split, *_ = split_fields(params.path, read_parquet(params.path))
        return raw_split_arrays(arrays, label, split)
