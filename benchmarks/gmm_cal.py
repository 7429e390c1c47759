"""GMM-guided training, purification and CAL against joint training on the synthetic presets.

Usage (full-size default presets)::

    OMP_NUM_THREADS=1 python benchmarks/gmm_cal.py --presets imbalanced noisy --seeds 0 1 2
    python benchmarks/gmm_cal.py --report            # markdown tables from the cache

Each cached row is keyed like ``benchmarks/methods.py``'s: the resolved run config plus a hash of
the code that can change its numbers (:func:`benchmarks.methods.trial_key`). A row whose key is
not today's is stale: it is re-run, and never shown in ``docs/results_gmm_cal.md`` (a generated
block, re-rendered from the cache by ``tests/test_doc_tables.py``).

Variants ending in ``/th`` use ``model.heads=trained`` (a separate unimodal head per
modality, trained with its encoder) instead of the default fusion-layer slices.

Per run it records final test accuracies, the end-of-run robustness scalars and, for the
purifying variants, precision/recall of the *removed* training samples against the
generator's corruption mask (``bundle.info["corrupted"]["train"]``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import doctables  # noqa: E402

DOC = "docs/results_gmm_cal.md"

CACHE = ROOT / "benchmarks" / "results" / "gmm_cal.jsonl"

VARIANTS: dict[str, dict] = {
    "joint": {"method": {"name": "joint"}},
    "joint+uni": {"method": {"name": "joint", "unimodal_weight": 1.0}},
    "gmm_adaptive": {"method": {"name": "gmm_adaptive"}},
    "gmm_adaptive+purify": {"method": {"name": "gmm_adaptive", "purify_epochs": 5}},
    "cal": {"method": {"name": "cal"}},
    "purify(joint)": {"method": {"name": "purify"}, "init": "joint", "epochs": 5},
}
VARIANTS["gmm_adaptive+purify/ema"] = {"method": {"name": "gmm_adaptive", "purify_epochs": 5, "gap_source": "ema"}}
VARIANTS["gmm_adaptive+purify/w3"] = {"method": {"name": "gmm_adaptive", "purify_epochs": 5, "warmup_epochs": 3}}
TRAINED = {"heads": "trained"}
for _v in ("joint+uni", "gmm_adaptive", "gmm_adaptive+purify", "cal"):
    VARIANTS[f"{_v}/th"] = {**VARIANTS[_v], "model": TRAINED}
VARIANTS["gmm_adaptive/th+detach"] = {"method": {"name": "gmm_adaptive", "detach_strong": True}, "model": TRAINED}
VARIANTS["cal/th-noaib"] = {"method": {"name": "cal", "bottleneck": False}, "model": TRAINED}
VARIANTS["cal/th-noaccel"] = {"method": {"name": "cal", "kappa": 0.0}, "model": TRAINED}
ABLATIONS = ["gmm_adaptive/th+detach", "cal/th-noaib", "cal/th-noaccel"]
PER_PRESET = {
    "imbalanced": ["joint", "joint+uni", "gmm_adaptive", "cal", "joint+uni/th", "gmm_adaptive/th", "cal/th", *ABLATIONS],
    "noisy": ["joint", "joint+uni", "gmm_adaptive", "gmm_adaptive+purify", "cal", "purify(joint)",
              "joint+uni/th", "gmm_adaptive/th", "gmm_adaptive+purify/th", "cal/th",
              "gmm_adaptive+purify/ema", "gmm_adaptive+purify/w3", *ABLATIONS],
}


def removed_pr(subset: np.ndarray, corrupted: np.ndarray) -> dict[str, float]:
    removed = np.ones(len(corrupted), dtype=bool)
    removed[np.asarray(subset, dtype=int)] = False
    tp = int((removed & corrupted).sum())
    return {
        "removed": int(removed.sum()),
        "precision": tp / max(int(removed.sum()), 1),
        "recall": tp / max(int(corrupted.sum()), 1),
        "base_rate": float(corrupted.mean()),
    }


def config_for(preset: str, variant: str, seed: int, epochs: int, runs_dir: Path):
    from modalscope.config import resolve_config

    spec = VARIANTS[variant]
    base = {
        "runs_dir": str(runs_dir),
        "name": f"{variant.replace('(', '-').replace(')', '').replace('+', '-').replace('/', '-')}_{preset}_s{seed}",
        "seed": seed,
        "epochs": spec.get("epochs", epochs),
        "data": {"name": "synthetic", "preset": preset},
        "method": dict(spec["method"]),
        "model": dict(spec.get("model", {})),
        "log": {"progress": False},
        "diagnostics": {"captum": False, "samples": False, "robust": True},
    }
    return resolve_config(base=base)


def key_for(preset: str, variant: str, seed: int, epochs: int) -> str:
    from benchmarks.methods import trial_key

    cfg = config_for(preset, variant, seed, epochs, Path("/tmp/unused"))
    return trial_key(cfg, cfg.method.name)


def run_one(preset: str, variant: str, seed: int, epochs: int, runs_dir: Path) -> dict:
    from modalscope.engine import Trainer

    spec = VARIANTS[variant]
    cfg = config_for(preset, variant, seed, epochs, runs_dir)
    init = None
    if "init" in spec:
        init = runs_dir / f"{spec['init']}_{preset}_s{seed}"
        if not (init / "checkpoint.pt").is_file():
            run_one(preset, spec["init"], seed, epochs, runs_dir)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, init_from=init)
    final = trainer.fit()
    from modalscope.store import open_run

    rob = open_run(trainer.run_dir).final_scalars("robust/")
    row = {"preset": preset, "variant": variant, "seed": seed, "epochs": cfg.epochs, "wall_s": time.perf_counter() - t0,
           "key": key_for(preset, variant, seed, epochs)}
    row.update({k: float(v) for k, v in final.items()})
    row.update({k: float(v) for k, v in rob.items()})
    subset = getattr(trainer.method, "subset", None)
    mask = trainer.full_bundle.info.get("corrupted", {}).get("train")
    if subset is not None and mask is not None and mask.any():
        row.update({f"purify/{k}": v for k, v in removed_pr(subset, mask).items()})
    return row


def load_cache() -> list[dict]:
    if not CACHE.is_file():
        return []
    return [json.loads(line) for line in CACHE.read_text().splitlines() if line.strip()]


def current_rows(rows: list[dict], epochs: int = 20) -> list[dict]:
    """Only rows whose key is today's (config + code), one per (preset, variant, seed)."""
    keys: dict[tuple, str] = {}
    out = {}
    for r in rows:
        k = (r["preset"], r["variant"], r["seed"])
        if r["variant"] not in VARIANTS or "key" not in r:
            continue
        if k not in keys:
            keys[k] = key_for(r["preset"], r["variant"], r["seed"], epochs)
        if r["key"] == keys[k]:
            out[k] = r
    return list(out.values())


@doctables.renderer("gmm_cal")
def render() -> str:
    rows = current_rows(load_cache())
    if not rows:
        return "*No current results: run `OMP_NUM_THREADS=1 python benchmarks/gmm_cal.py`.*\n"
    return report(rows).strip() + "\n"


def report(rows: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    rob = [c for c in df.columns if c.startswith("robust/") and c != "robust/clean"]
    df["robust mean"] = df[rob].mean(axis=1)
    lines = []
    for preset, g in df.groupby("preset", sort=False):
        lines.append(f"\n### {preset} (test accuracy, mean ± std over seeds {sorted(g['seed'].unique().tolist())})\n")
        cols = ["acc/test/fused", "acc/test/audio", "acc/test/visual", "robust/audio/noise/1", "robust/audio/noise/2",
                "robust/audio/blank/1", "robust/visual/noise/2", "robust/visual/blank/1", "robust mean"]
        cols = [c for c in cols if c in g]
        lines.append("| variant | n | " + " | ".join(c.replace("acc/test/", "") for c in cols) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        for v, h in g.groupby("variant", sort=False):
            cells = [f"{h[c].mean():.3f} ± {h[c].std(ddof=0):.3f}" for c in cols]
            lines.append(f"| {v} | {len(h)} | " + " | ".join(cells) + " |")
        pr = g.dropna(subset=["purify/precision"]) if "purify/precision" in g else g.iloc[0:0]
        if len(pr):
            lines.append("\nRemoved samples vs the corruption mask (precision / recall / removed; base rate "
                         f"{pr['purify/base_rate'].iloc[0]:.3f}):\n")
            for v, h in pr.groupby("variant", sort=False):
                lines.append(f"- {v}: precision {h['purify/precision'].mean():.3f} ± {h['purify/precision'].std(ddof=0):.3f}, "
                             f"recall {h['purify/recall'].mean():.3f} ± {h['purify/recall'].std(ddof=0):.3f}, "
                             f"removed {h['purify/removed'].mean():.0f} of 1500")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="*", default=list(PER_PRESET))
    p.add_argument("--variants", nargs="*", default=None)
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--runs-dir", default="/tmp/modalscope-bench-gmmcal")
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    if a.report:
        print(render())
        return 0
    done = {(r["preset"], r["variant"], r["seed"]) for r in current_rows(load_cache(), a.epochs)}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    for preset in a.presets:
        for variant in a.variants or PER_PRESET[preset]:
            for seed in a.seeds:
                if (preset, variant, seed) in done:
                    continue
                row = run_one(preset, variant, seed, a.epochs, Path(a.runs_dir))
                with open(CACHE, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{preset} {variant} s{seed}: fused {row['acc/test/fused']:.3f} ({row['wall_s']:.0f}s)", flush=True)
    doctables.write_block(DOC, "gmm_cal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
