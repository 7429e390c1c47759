"""Synthetic multimodal data with a known answer: the embedded default dataset.

Generative model (per split, per sample):

* class ``y`` uniform over ``K`` classes; class ``k`` has a binary code ``c_k ∈ {−1,+1}^B``
  (the bits of ``k``, ``B = ceil(log2 K)``).
* each modality ``m`` sees the code through its own per-bit signal strengths ``w^m``:
  latent ``u_m = w^m ⊙ c_y + ε``, ``ε ~ N(0, I_B)``. A modality that is strong on some bits
  and weak on others carries *complementary* information: fusion can beat every modality.
* the observed vector is ``x_m = scale_m · Q_m [u_m ; n_m]`` with ``n_m ~ N(0, I)`` nuisance
  dimensions and ``Q_m`` a fixed random rotation. ``scale_m`` does not change what can be
  known (Bayes accuracy) but sets how fast gradient descent learns the modality: the
  *slow* modality has a small scale, the fast one a large scale — the mechanism by which
  the fast modality saturates the joint loss and suppresses the slow one.
* corruption: a fraction ``corrupt_rate`` of samples has modality ``corrupt_modality``
  replaced by a pure-noise latent (``noise``), by another class's signal (``swap``), or
  dropped altogether — the whole observed vector is zero (``missing``: a dead sensor, a
  silent track; nothing per-sample is left to memorise).
  The per-sample mask is kept in ``bundle.info["corrupted"][split]`` so diagnostics can be
  scored against it.

Presets (``docs/data.md`` has the table and the measured ceilings):

* ``imbalanced`` (default): **redundant** — every modality sees every code bit — with audio
  fast (scale 1, 128 dims) and visual slow (scale 0.3, 512 dims: many nuisance dimensions
  relative to the encoder width). Audio fits and memorises the training split first, the
  fused loss vanishes and the visual *encoder* stops learning: the suppression reported on
  CREMA-D / Kinetics-Sounds, which an ensemble of separately trained encoders and balancing
  methods recover.
* ``complementary``: each modality carries bits the other lacks. Joint training is nearly
  right and a weak visual head means specialisation, not suppression (the teaching contrast).
* ``balanced``, ``noisy`` (redundant, audio missing on 30 % of the samples), ``three_modal``
  (redundant, audio fast, visual and text slow).

Default splits: 1500 train, 1000 valid, 4000 test (one seed's test accuracy then has a
standard error ≤ √(0.25/4000) = 0.8 points).

Bayes ceilings are computed from the true likelihoods by Monte Carlo:
``p(y=k | x) ∝ Π_m p(u_m | k)`` where ``p(u_m | k)`` is the Gaussian (or, for the
corrupted modality, the mixture ``(1−r)·N(w⊙c_k, I) + r·q(u)``). Since ``Q_m`` is a
rotation and ``n_m`` is independent of ``y``, ``u_m`` is a sufficient statistic.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from modalscope.data.base import DatasetBundle, DatasetParams, DatasetSource, TensorMultimodalDataset, register_dataset
from modalscope.errors import ConfigError

MODALITY_ORDER = ("audio", "visual", "text")

PRESETS: dict[str, dict] = {
    "balanced": {
        "modalities": ["audio", "visual"],
        "strength": {"audio": [1.2, 1.2, 1.2], "visual": [1.2, 1.2, 1.2]},
        "scale": {"audio": 1.0, "visual": 1.0},
        "corrupt_rate": 0.0,
    },
    "imbalanced": {
        "modalities": ["audio", "visual"],
        "strength": {"audio": [1.6, 1.6, 1.6], "visual": [1.4, 1.4, 1.4]},
        "scale": {"audio": 1.0, "visual": 0.3},
        "corrupt_rate": 0.0,
    },
    "complementary": {
        "modalities": ["audio", "visual"],
        "strength": {"audio": [2.2, 2.2, 0.3], "visual": [0.8, 0.8, 1.6]},
        "scale": {"audio": 1.0, "visual": 0.3},
        "corrupt_rate": 0.0,
    },
    "noisy": {
        "modalities": ["audio", "visual"],
        "strength": {"audio": [1.6, 1.6, 1.6], "visual": [1.6, 1.6, 1.6]},
        "scale": {"audio": 1.0, "visual": 0.3},
        "corrupt_rate": 0.3,
        "corrupt_kind": "missing",
        "dims": {"audio": 64, "visual": 64},
    },
    "three_modal": {
        "modalities": ["audio", "visual", "text"],
        "strength": {"audio": [1.6, 1.6, 1.6], "visual": [1.4, 1.4, 1.4], "text": [1.2, 1.2, 1.2]},
        "scale": {"audio": 1.0, "visual": 0.3, "text": 0.3},
        "corrupt_rate": 0.0,
    },
}

DIMS = {"audio": 128, "visual": 512, "text": 256}


class SyntheticParams(DatasetParams):
    name: Literal["synthetic"] = "synthetic"
    preset: Literal["balanced", "imbalanced", "complementary", "noisy", "three_modal"] = Field(
        "imbalanced", description="Named setting of every knob below (knobs left empty take the preset's value)."
    )
    n_classes: int = Field(8, ge=2, le=64, description="Number of classes K.")
    n_train: int = Field(1500, ge=10, le=2_000_000, description="Training samples.")
    n_valid: int = Field(1000, ge=0, le=2_000_000, description="Validation samples (0 = no validation split).")
    n_test: int = Field(4000, ge=10, le=2_000_000, description="Test samples.")
    strength: dict[str, list[float]] | None = Field(
        None, description="Per-modality signal strength per code bit (Bayes accuracy rises with it)."
    )
    scale: dict[str, float] | None = Field(
        None, description="Per-modality input scale: learning speed under gradient descent (Bayes-neutral)."
    )
    dims: dict[str, int] | None = Field(None, description="Per-modality feature dimension (signal + nuisance).")
    corrupt_rate: float | None = Field(None, ge=0.0, lt=1.0, description="Fraction of samples with a corrupted modality.")
    corrupt_modality: str = Field("audio", description="Which modality the corrupted subset loses.")
    corrupt_kind: Literal["noise", "swap", "missing"] | None = Field(
        None, description="noise: signal removed; swap: another class's signal; missing: the whole input zeroed."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Data seed (independent of the training seed).")

    @model_validator(mode="after")
    def _fill_from_preset(self) -> "SyntheticParams":
        p = PRESETS[self.preset]
        mods = p["modalities"]
        if self.strength is None:
            object.__setattr__(self, "strength", {m: list(v) for m, v in p["strength"].items()})
        if self.scale is None:
            object.__setattr__(self, "scale", dict(p["scale"]))
        if self.dims is None:
            object.__setattr__(self, "dims", dict(p.get("dims") or {m: DIMS[m] for m in mods}))
        if self.corrupt_kind is None:
            object.__setattr__(self, "corrupt_kind", p.get("corrupt_kind", "noise"))
        if self.corrupt_rate is None:
            object.__setattr__(self, "corrupt_rate", p["corrupt_rate"])
        names = list(self.strength)
        for label, d in (("scale", self.scale), ("dims", self.dims)):
            if set(d) != set(names):
                raise ValueError(f"data.{label} must name the same modalities as data.strength ({', '.join(names)})")
        if not 1 <= len(names) <= 3 or any(m not in MODALITY_ORDER for m in names):
            raise ValueError(f"synthetic modalities must be 1-3 of {', '.join(MODALITY_ORDER)}; got {', '.join(names)}")
        bits = n_bits(self.n_classes)
        for m, w in self.strength.items():
            if len(w) != bits:
                raise ValueError(f"data.strength.{m} needs {bits} values (one per code bit of {self.n_classes} classes)")
            if any(not math.isfinite(v) or v < 0 for v in w):
                raise ValueError(f"data.strength.{m} values must be finite and >= 0")
        for m, s in self.scale.items():
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"data.scale.{m} must be > 0 (got {s})")
        for m, d in self.dims.items():
            if d < bits or d > 100_000:
                raise ValueError(f"data.dims.{m} must be in [{bits}, 100000] (got {d})")
        if self.corrupt_rate and self.corrupt_modality not in names:
            raise ValueError(f"data.corrupt_modality {self.corrupt_modality!r} is not one of {', '.join(names)}")
        return self

    def ordered_modalities(self) -> list[str]:
        return [m for m in MODALITY_ORDER if m in self.strength]


def n_bits(k: int) -> int:
    return max(1, math.ceil(math.log2(k)))


def class_codes(k: int) -> np.ndarray:
    """(K, B) matrix of ±1 codes: the bits of each class index."""
    b = n_bits(k)
    bits = (np.arange(k)[:, None] >> np.arange(b)[None, :]) & 1
    return (2.0 * bits - 1.0).astype(np.float64)


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))[None, :]


def sample_latents(p: SyntheticParams, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Draw labels, per-modality latents ``u_m`` (n, B) and the corruption mask."""
    codes = class_codes(p.n_classes)
    y = rng.integers(0, p.n_classes, size=n)
    lat = {}
    for m in p.ordered_modalities():
        w = np.asarray(p.strength[m], dtype=np.float64)
        lat[m] = w[None, :] * codes[y] + rng.standard_normal((n, codes.shape[1]))
    mask = np.zeros(n, dtype=bool)
    if p.corrupt_rate:
        mask = rng.random(n) < p.corrupt_rate
        m = p.corrupt_modality
        w = np.asarray(p.strength[m], dtype=np.float64)
        k = int(mask.sum())
        if p.corrupt_kind == "noise":
            lat[m][mask] = rng.standard_normal((k, codes.shape[1]))
        elif p.corrupt_kind == "missing":
            lat[m][mask] = 0.0
        else:
            other = (y[mask] + rng.integers(1, p.n_classes, size=k)) % p.n_classes
            lat[m][mask] = w[None, :] * codes[other] + rng.standard_normal((k, codes.shape[1]))
    return y, lat, mask


def log_likelihoods(p: SyntheticParams, lat: dict[str, np.ndarray], modalities: list[str]) -> np.ndarray:
    """(n, K) log p(u_{modalities} | y = k) under the true generative model (up to a constant)."""
    codes = class_codes(p.n_classes)
    n = next(iter(lat.values())).shape[0]
    total = np.zeros((n, p.n_classes))
    for m in modalities:
        w = np.asarray(p.strength[m], dtype=np.float64)
        means = w[None, :] * codes
        d2 = ((lat[m][:, None, :] - means[None, :, :]) ** 2).sum(-1)
        clean = -0.5 * d2
        r = p.corrupt_rate if m == p.corrupt_modality else 0.0
        if r and p.corrupt_kind == "missing":
            missing = ~lat[m].any(axis=1)
            total += np.where(missing[:, None], 0.0, clean)
        elif r:
            if p.corrupt_kind == "noise":
                alt = np.repeat((-0.5 * (lat[m] ** 2).sum(-1))[:, None], p.n_classes, axis=1)
            else:
                lse_all = _logsumexp(clean, axis=1)[:, None]
                with np.errstate(divide="ignore"):
                    alt = np.log(np.maximum(np.exp(lse_all) - np.exp(clean), 1e-300)) - math.log(p.n_classes - 1)
            total += np.logaddexp(math.log1p(-r) + clean, math.log(r) + alt)
        else:
            total += clean
    return total


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    mx = a.max(axis=axis, keepdims=True)
    return (mx + np.log(np.exp(a - mx).sum(axis=axis, keepdims=True))).squeeze(axis)


def bayes_ceilings(p: SyntheticParams, n_mc: int = 200_000, seed: int = 12345) -> dict[str, float]:
    """Bayes-optimal accuracy for the fused input and for each modality alone (Monte Carlo).

    The ceilings depend on the generative model only, not on the data seed or the split
    sizes, so those are left out of the cache key: every seed of a preset shares one estimate.
    Cached on disk (:mod:`modalscope.data.disk_cache`) under the parameters, ``n_mc``, ``seed`` and
    the source of the functions below, so a second run with the same preset skips the estimate.
    """
    from modalscope.data.disk_cache import cached_json

    params_json = p.model_copy(update={"seed": 0, "n_train": 10, "n_valid": 0, "n_test": 10}).model_dump_json()
    keys = ["fused", *p.ordered_modalities()]
    pairs = cached_json(
        "bayes",
        [params_json, n_mc, seed],
        lambda: [list(kv) for kv in _bayes_cached(params_json, n_mc, seed)],
        code=(class_codes, sample_latents, log_likelihoods, _logsumexp, _bayes_cached),
        valid=lambda v: isinstance(v, list) and [k for k, _ in v] == keys and all(isinstance(x, float) for _, x in v),
    )
    return {k: float(v) for k, v in pairs}


@lru_cache(maxsize=64)
def _bayes_cached(params_json: str, n_mc: int, seed: int) -> tuple[tuple[str, float], ...]:
    p = SyntheticParams.model_validate_json(params_json)
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    mods = p.ordered_modalities()
    chunk = 50_000
    hits = {k: 0 for k in ["fused", *mods]}
    done = 0
    while done < n_mc:
        n = min(chunk, n_mc - done)
        y, lat, _ = sample_latents(p, n, rng)
        for key, ms in [("fused", mods)] + [(m, [m]) for m in mods]:
            hits[key] += int((log_likelihoods(p, lat, ms).argmax(1) == y).sum())
        done += n
    for k, h in hits.items():
        out[k] = h / n_mc
    return tuple(out.items())


def analytic_ceiling(strengths: list[np.ndarray]) -> float:
    """Exact Bayes accuracy for K = 2^B uncorrupted classes: Π_b Φ(‖w_b‖) over combined bits."""
    from scipy.stats import norm

    w = np.sqrt(sum(np.asarray(s, dtype=np.float64) ** 2 for s in strengths))
    return float(np.prod(norm.cdf(w)))


def generate(params: SyntheticParams) -> dict[str, np.ndarray]:
    """The arrays of one synthetic dataset (``<split>.x.<m>`` float32, ``<split>.y`` int64,
    ``<split>.mask`` bool); a pure function of ``params``, so :meth:`Synthetic.build` caches it
    on disk (:func:`modalscope.data.disk_cache.cached_arrays`, keyed by the parameters and this
    module's source)."""
    rng = np.random.default_rng(params.seed)
    mods = params.ordered_modalities()
    rot = {m: _rotation(rng, params.dims[m]) for m in mods}
    out: dict[str, np.ndarray] = {}
    for split, n in (("train", params.n_train), ("valid", params.n_valid), ("test", params.n_test)):
        if n == 0:
            continue
        y, lat, mask = sample_latents(params, n, rng)
        for m in mods:
            b = lat[m].shape[1]
            full = np.concatenate([lat[m], rng.standard_normal((n, params.dims[m] - b))], axis=1)
            x = params.scale[m] * full @ rot[m].T
            if params.corrupt_kind == "missing" and m == params.corrupt_modality:
                x[mask] = 0.0
            out[f"{split}.x.{m}"] = x.astype(np.float32)
        out[f"{split}.y"] = y.astype(np.int64)
        out[f"{split}.mask"] = np.asarray(mask, dtype=bool)
    return out


@register_dataset("synthetic")
class Synthetic(DatasetSource):
    """Built-in generator; see module docstring for the generative model."""

    Params = SyntheticParams

    @classmethod
    def modalities(cls, params: SyntheticParams) -> list[str]:
        return params.ordered_modalities()

    @classmethod
    def build(cls, params: SyntheticParams) -> DatasetBundle:
        if params.corrupt_kind == "swap" and params.n_classes < 2:
            raise ConfigError("data.corrupt_kind=swap needs at least 2 classes")
        import sys

        from modalscope.data.disk_cache import cached_arrays

        mods = params.ordered_modalities()
        arrays = cached_arrays("synthetic", params.model_dump(mode="json"), lambda: generate(params), code=(sys.modules[__name__],))
        splits, masks = {}, {}
        for split in ("train", "valid", "test"):
            if f"{split}.y" not in arrays:
                continue
            tensors = {m: torch.from_numpy(np.ascontiguousarray(arrays[f"{split}.x.{m}"])) for m in mods}
            splits[split] = TensorMultimodalDataset(tensors, torch.from_numpy(np.ascontiguousarray(arrays[f"{split}.y"])))
            masks[split] = arrays[f"{split}.mask"]
        ceilings = bayes_ceilings(params)
        return DatasetBundle(
            splits=splits,
            modalities=mods,
            kinds={m: "vector" for m in mods},
            shapes={m: (params.dims[m],) for m in mods},
            task="classification",
            class_names=[f"class{k}" for k in range(params.n_classes)],
            info={"bayes": ceilings, "corrupted": masks, "preset": params.preset},
        )
