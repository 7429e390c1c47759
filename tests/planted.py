"""Planted run stores for dashboard tests, benchmarks and screenshots (known values, no training).

``plant_run`` writes a run folder through ``modalscope.store.RunWriter`` exactly as a trainer
would: config.json, step scalars, per-epoch accuracies, a bimodal gap histogram with its
fitted 2-component GMM, contributions, events and a robustness table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from modalscope.config import resolve_config
from modalscope.store import RunWriter

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
    probes: bool = True,
    probe_util: dict | None = None,
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
    total = epochs * steps_per_epoch

    def rise(e: int, speed: float) -> float:  # 0 → 1 at the last epoch, fast or slow
        return (1 - np.exp(-speed * (e + 1) / epochs)) / (1 - np.exp(-speed))

    for ep in range(epochs):
        for _ in range(steps_per_epoch):
            t = step / max(1, total - 1)
            vals = {"loss/total": 0.25 + 1.85 * np.exp(-4 * t) + 0.08 * rng.standard_normal(), "loss/fused": 0.25 + 1.8 * np.exp(-4 * t)}
            if len(mods) > 1:
                share_a = float(np.clip(0.88 - 0.2 * t + 0.04 * rng.standard_normal(), 0.05, 0.98))
                scale = 1.5 * np.exp(-2 * t) + 0.2
                na, nv = scale * share_a, scale * (1 - share_a)
                vals.update({"grad_norm/audio": na, "grad_norm/visual": nv, "grad_norm/fusion": 0.6 * scale,
                             "grad_share/audio": share_a, "grad_share/visual": 1 - share_a,
                             "grad_ratio": na / nv, "conflict/flag": float(na / nv > 2),
                             "loss/audio": 0.9 + 1.2 * np.exp(-5 * t), "loss/visual": 1.6 + 0.5 * np.exp(-t)})
                if step % 5 == 0:
                    vals.update({"conflict/cos/audio": 0.9 - 0.2 * t, "conflict/cos/visual": 0.3 * np.exp(-3 * t) - 0.05 + 0.05 * rng.standard_normal()})
            if method == "ogm_ge":
                k_a = float(np.clip(0.35 + 0.4 * t + 0.05 * rng.standard_normal(), 0, 1))
                vals.update({"ogm/coeff/audio": k_a, "ogm/coeff/visual": 1.0, "ogm/ratio": na / max(nv, 1e-6),
                             "ogm/score/audio": 30.0 * share_a, "ogm/score/visual": 30.0 * (1 - share_a)})
            if len(mods) > 1:  # what the optimiser got: OGM-GE damps audio by k_a, other methods leave it
                ka = k_a if method == "ogm_ge" else 1.0
                aa, av = na * ka, nv
                vals.update({"grad_applied/audio": aa, "grad_applied/visual": av, "grad_applied_share/audio": aa / (aa + av),
                             "grad_applied_share/visual": av / (aa + av), "grad_applied_ratio": aa / av})
            w.log_scalars(step, ep, vals)
            step += 1
        accs = {"acc/test/fused": top * rise(ep, 3.0), "acc/train/fused": min(1.0, top * rise(ep, 3.0) + 0.05)}
        for i, m in enumerate(mods):
            if method == "unimodal":
                accs[f"acc/test/{m}"] = top * rise(ep, 3.0)
            else:
                accs[f"acc/test/{m}"] = (0.6 * rise(ep, 4.0)) if i == 0 else (0.35 * rise(ep, 1.0))
        accs.update({"lr": 0.05, "time/epoch": 1.5 + 0.1 * rng.random()})
        if probes:
            for m in mods:  # linear probe on frozen features: 0.5 at init; trained alone it reaches 0.7, together less
                if ep == 0:
                    accs[f"probe_init/test/{m}"] = 0.5
                gain = 0.2 if method == "unimodal" else (0.1 if m == "audio" else 0.06)
                accs[f"probe/test/{m}"] = 0.5 + gain * rise(ep, 2.0)
        w.log_scalars(step - 1, ep, accs)
        if gap and len(mods) > 1:
            f = rise(ep, 2.0)
            g = {"weights": GMM["weights"], "means": [m * f for m in GMM["means"]], "variances": GMM["variances"]}
            for split in ("train", "test"):
                w.log_histogram(ep, split, "audio-visual", edges, gmm_counts(edges, 1000, g))
                w.log_gmm(ep, split, "audio-visual", g["weights"], g["means"], g["variances"], 120.0, 80.0, 0.2 * f, 0)
            for m in mods:
                a = m == "audio"
                w.log_contribution(ep, m, (0.4 if a else 0.1) + 0.05 * f * (-1 if a else 1), 0.5 + (0.3 if a else -0.1) * f,
                                   0.5 + (0.2 if a else -0.2) * f, None)
    w.log_event(step, epochs - 1, "stage", "planted event")
    if status == "finished" and epochs > 1:  # best valid epoch: the one before the last
        w.log_scalars(step - 1, epochs - 1, {"acc/best/test/fused": round(top * rise(epochs - 2, 3.0), 4), "best/epoch": epochs - 2})
    if probe_util:
        w.log_scalars(step - 1, epochs - 1, {f"probe_util/{m}": v for m, v in probe_util.items()})
    if len(mods) > 1:
        rob = {"modality": [], "kind": [], "level": [], "acc": []}
        for m, blank, noise in zip(mods, (0.22, 0.5), ((0.8, 0.75, 0.57), (0.81, 0.78, 0.69))):
            for kind, level, acc in [("noise", lv, a) for lv, a in zip((0.5, 1.0, 2.0), noise)] + [("blank", 1.0, blank)]:
                for k, v in (("modality", m), ("kind", kind), ("level", level), ("acc", acc)):
                    rob[k].append(v)
        table = pd.DataFrame(rob).assign(clean=0.84)
        w.log_table("robustness", table.assign(drop=(0.84 - table["acc"]).round(3)))
        w.log_scalars(step - 1, epochs - 1, {"robust/clean": 0.84, **{f"robust/{r.modality}/{r.kind}/{r.level:g}": r.acc
                                                                        for r in table.itertuples()}})
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
    from modalscope.methods.base import _REGISTRY

    return method in _REGISTRY


def append_epoch(run_dir: Path, epoch: int, acc: float = 0.5) -> None:
    """Append one finished epoch (fused test accuracy and a gap histogram) to a running planted
    run, as its trainer would: the live page must pick it up without a reload."""
    edges = np.linspace(-1, 1, 41)
    w = RunWriter(run_dir, resume=True, heartbeat_seconds=3600)
    w.log_scalars(1000 + epoch, epoch, {"acc/test/fused": acc, "loss/total": 1.0})
    w.log_histogram(epoch, "test", "audio-visual", edges, gmm_counts(edges, 1000))
    w.flush()
    w._hb_stop.set()
