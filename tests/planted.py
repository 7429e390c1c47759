"""Planted run stores for dashboard tests, benchmarks and screenshots (known values, no training).

``plant_run`` writes a run folder through ``core.store.RunWriter`` exactly as a trainer
would: config.json, step scalars, per-epoch accuracies, a bimodal gap histogram with its
fitted 2-component GMM, contributions, events and a robustness table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import resolve_config
from core.store import RunWriter

GMM = {"weights": [0.7, 0.3], "means": [-0.35, 0.55], "variances": [0.02, 0.01]}


def gmm_counts(edges: np.ndarray, n: int, gmm: dict = GMM) -> np.ndarray:
    """Expected histogram counts of ``n`` samples from ``gmm`` over ``edges`` (rounded)."""
    from scipy.stats import norm

    cdf = sum(w * norm.cdf(edges, m, np.sqrt(v)) for w, m, v in zip(gmm["weights"], gmm["means"], gmm["variances"]))
    return np.round(np.diff(cdf) * n)


def plant_run(
    root: Path,
    name: str,
    method: str = "joint",
    preset: str = "imbalanced",
    seed: int = 0,
    epochs: int = 4,
    steps_per_epoch: int = 10,
    modality: str | None = None,
    gap: bool = True,
    status: str = "finished",
    tags: dict | None = None,
    set_: list[str] | None = None,
    final_acc: float | None = None,
    thinned: str = "",
) -> Path:
    raw = {"name": name, "runs_dir": str(root), "seed": seed, "epochs": epochs, "data": {"name": "synthetic", "preset": preset},
           "method": {"name": method, **({"modality": modality} if modality else {})}, "tags": tags or {}}
    cfg = resolve_config(base=raw, overrides=set_ or [])
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg.dump(), indent=2))
    mods = [modality] if method == "unimodal" else ["audio", "visual"]
    w = RunWriter(d, flush_rows=100_000, flush_seconds=1e9, heartbeat_seconds=3600)
    w.set_many({"modalities": mods, "steps_per_epoch": steps_per_epoch, "thinned": thinned,
                "reference": {"bayes": {"fused": 0.93, "audio": 0.6, "visual": 0.586}, "preset": preset}})
    rng = np.random.default_rng(seed)
    step = 0
    top = final_acc if final_acc is not None else 0.8 + 0.02 * seed
    edges = np.linspace(-1, 1, 41)
    for ep in range(epochs):
        for _ in range(steps_per_epoch):
            vals = {"loss/total": 2.0 * np.exp(-step / 50) + 0.1 * rng.random(), "loss/fused": 2.0 * np.exp(-step / 50)}
            if len(mods) > 1:
                na, nv = 1.0 + rng.random(), 0.2 + 0.1 * rng.random()
                vals.update({"grad_norm/audio": na, "grad_norm/visual": nv, "grad_norm/fusion": 0.5,
                             "grad_share/audio": na / (na + nv), "grad_share/visual": nv / (na + nv),
                             "grad_ratio": na / nv, "conflict/flag": float(na / nv > 2), "loss/audio": 1.0, "loss/visual": 1.8})
                if step % 5 == 0:
                    vals.update({"conflict/cos/audio": 0.8, "conflict/cos/visual": -0.1 + 0.05 * rng.random()})
            if method == "ogm_ge":
                vals.update({"ogm/coeff/audio": 0.5 + 0.1 * rng.random(), "ogm/coeff/visual": 1.0, "ogm/ratio": 3.0})
            w.log_scalars(step, ep, vals)
            step += 1
        frac = (ep + 1) / epochs
        accs = {"acc/test/fused": top * frac, "acc/train/fused": min(1.0, top * frac + 0.05)}
        for i, m in enumerate(mods):
            accs[f"acc/test/{m}"] = (0.6 - 0.25 * i) * frac
        accs.update({"lr": 0.05, "time/epoch": 1.5})
        w.log_scalars(step - 1, ep, accs)
        if gap and len(mods) > 1:
            for split in ("train", "test"):
                w.log_histogram(ep, split, "audio-visual", edges, gmm_counts(edges, 1000))
                w.log_gmm(ep, split, "audio-visual", GMM["weights"], GMM["means"], GMM["variances"], 120.0, 80.0, 0.2, 0)
            for m in mods:
                w.log_contribution(ep, m, 0.4 if m == "audio" else 0.1, 0.8 if m == "audio" else 0.3, 0.7 if m == "audio" else 0.3, None)
    w.log_event(step, epochs - 1, "stage", "planted event")
    if len(mods) > 1:
        w.log_table("robustness", pd.DataFrame({"modality": mods, "kind": ["noise"] * len(mods), "acc": [0.5, 0.7][: len(mods)]}))
    w.flush()
    if status == "running":
        w._hb_stop.set()
        return d
    w.close(status)
    return d


def plant_gallery(root: Path, seeds=(0, 1)) -> list[Path]:
    """A small gallery named like the shipped one: joint, unimodal (each modality), ogm_ge."""
    out = []
    for s in seeds:
        out.append(plant_run(root, f"joint_imbalanced_s{s}", "joint", seed=s))
        out.append(plant_run(root, f"ogm_ge_imbalanced_s{s}", "ogm_ge" if _has("ogm_ge") else "joint", seed=s,
                             set_=[] if _has("ogm_ge") else ["method.unimodal_weight=0.5"], final_acc=0.86 + 0.01 * s))
    out.append(plant_run(root, "unimodal-audio_imbalanced_s0", "unimodal", modality="audio", gap=False, final_acc=0.58))
    out.append(plant_run(root, "unimodal-visual_imbalanced_s0", "unimodal", modality="visual", gap=False, final_acc=0.55))
    out.append(plant_run(root, "joint_noisy_s0", "joint", preset="noisy", thinned="samples: every other epoch"))
    return out


def _has(method: str) -> bool:
    from core.methods.base import _REGISTRY

    return method in _REGISTRY
