"""Test-time corruption of one modality at a time: how much does the fused model rely on it?

For every modality ``m`` the test split is evaluated again with ``x_m`` replaced by

* ``noise`` at level ``s``: ``x_m + s·σ_m ⊙ ε``, ``ε ~ N(0, I)``, where ``σ_m`` is the
  per-feature standard deviation of ``x_m`` over the training split (so a level means the
  same thing for every modality and feature scale);
* ``blank``: ``x_m = 0`` (the "absent modality" convention of the Shapley contributions).
  Non-float inputs (token ids) are only blanked.

Everything else is unchanged, so a drop against the clean accuracy is caused by that
modality alone. The noise uses its own seeded generator: the evaluation is reproducible and
never touches the training RNG. Results: scalars ``robust/<m>/<kind>/<level>`` (``blank``
uses level ``1``) plus ``robust/clean``, and a table (modality, kind, level, acc, drop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from modalscope.data.base import BatchLoader, MultimodalDataset

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from modalscope.engine import Trainer


@torch.no_grad()
def feature_moments(dataset: MultimodalDataset, modalities: list[str], batch_size: int = 1024) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-feature (mean, std) of each modality over ``dataset`` (float64 accumulation)."""
    sums: dict[str, torch.Tensor] = {}
    sq: dict[str, torch.Tensor] = {}
    n = 0
    for batch in BatchLoader(dataset, batch_size, shuffle=False):
        for m in modalities:
            x = batch[m].double().cpu()
            sums[m] = sums.get(m, 0) + x.sum(0)
            sq[m] = sq.get(m, 0) + (x * x).sum(0)
        n += len(batch["label"])
    out = {}
    for m in modalities:
        mean = sums[m] / max(n, 1)
        var = (sq[m] / max(n, 1) - mean * mean).clamp_min(0.0)
        out[m] = (mean.float(), var.sqrt().float())
    return out


def corruption(modality: str, kind: str, level: float, std: torch.Tensor | None, seed: int = 0) -> Callable[[dict], dict]:
    """A batch transform that corrupts ``modality`` only (``kind`` in ``noise`` / ``blank``)."""
    state: dict[str, torch.Generator] = {}

    def transform(batch: dict) -> dict:
        x = batch[modality]
        out = dict(batch)
        if kind == "blank":
            out[modality] = torch.zeros_like(x)
            return out
        if kind != "noise":
            raise ValueError(f"unknown corruption {kind!r}")
        if level == 0.0:
            return out
        g = state.get("g")
        if g is None:
            g = state["g"] = torch.Generator(device=x.device).manual_seed(seed)
        eps = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        out[modality] = x + level * std.to(x.device, x.dtype) * eps
        return out

    return transform


def evaluate_robustness(trainer: "Trainer", levels: list[float], seed: int = 0, split: str = "test") -> tuple[dict[str, float], pd.DataFrame]:
    """Clean and corrupted accuracy of the fused prediction on ``split`` (see module doc)."""
    mods = trainer.bundle.modalities
    key = f"acc/{split}/fused"
    clean = trainer.predict_split(split).metrics[key]
    moments = feature_moments(trainer.bundle.splits["train"], mods)
    scalars = {"robust/clean": clean}
    rows = []
    probe = next(iter(BatchLoader(trainer.bundle.splits[split], 1, shuffle=False)))
    for i, m in enumerate(mods):
        noise = [("noise", float(lv)) for lv in levels] if probe[m].is_floating_point() else []
        runs = noise + [("blank", 1.0)]
        for kind, level in runs:
            tf = corruption(m, kind, level, moments[m][1], seed=seed * 1009 + i)
            acc = trainer.predict_split(split, transform=tf).metrics[key]
            scalars[f"robust/{m}/{kind}/{level:g}"] = acc
            rows.append({"modality": m, "kind": kind, "level": level, "acc": acc, "clean": clean, "drop": clean - acc})
    import pandas as pd

    return scalars, pd.DataFrame(rows, columns=["modality", "kind", "level", "acc", "clean", "drop"])
