"""Engine overhead versus a bare PyTorch loop, and run-store write rate.

Same model (MultimodalModel), same data (the default synthetic preset), same optimiser
(SGD, the RunConfig defaults) and the same per-epoch test evaluation; the bare loop and the
engine configurations are alternated in one process (``--reps`` rounds) and the median
wall time of each is compared, so machine load drifts hit every variant alike.

Rows:
* ``engine (default logging)``: per-step loss / gradient-norm scalars, per-epoch
  accuracies, checkpoints; the heavier diagnostics families switched off.
* ``engine (full diagnostics)``: every diagnostic at its default cadence.

Usage: ``python benchmarks/overhead.py [--epochs 20] [--reps 3] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from core.config import resolve_config  # noqa: E402
from core.data import BatchLoader  # noqa: E402
from core.engine import Trainer, build_bundle, seed_everything  # noqa: E402
from core.models import build_model  # noqa: E402
from core.store import RunWriter  # noqa: E402

LIGHT = {"conflict": False, "gap": False, "samples": False, "gmm": False, "contrib": False, "captum": False, "robust": False}


def bare_loop(cfg, bundle) -> float:
    seed_everything(cfg.seed)
    model = build_model(cfg, bundle)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        loader = BatchLoader(bundle.splits["train"], cfg.batch_size, shuffle=True, seed=cfg.seed)
        loader.set_epoch(epoch)
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            out = model(batch)
            torch.nn.functional.cross_entropy(out.fused, batch["label"]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = 0
            for batch in BatchLoader(bundle.splits["test"], 512, shuffle=False):
                correct += int((model(batch).fused.argmax(1) == batch["label"]).sum())
    return time.perf_counter() - t0


def engine_run(cfg, bundle, root: Path) -> float:
    t0 = time.perf_counter()
    t = Trainer(cfg, bundle=bundle, run_dir=root / f"r{time.perf_counter_ns()}")
    t.fit()
    return time.perf_counter() - t0


def write_rate(root: Path, n: int = 200_000) -> float:
    w = RunWriter(root / "write_rate")
    t0 = time.perf_counter()
    for i in range(n // 10):
        w.log_scalars(i, 0, {f"metric/{k}": float(i + k) for k in range(10)})
    w.close("finished")
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--heavy", action="store_true", help="wider encoders and 4x the data (model.hidden=512, data.n_train=6000)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = {"epochs": args.epochs, "log": {"progress": False}, "device": "cpu"}
    if args.heavy:
        base.update({"model": {"hidden": 512}, "data": {"n_train": 6000}})
    cfg_bare = resolve_config(base=base)
    cfg_light = resolve_config(base={**base, "diagnostics": LIGHT})
    cfg_full = resolve_config(base=base)
    bundle = build_bundle(cfg_bare)
    times: dict[str, list[float]] = {"bare": [], "light": [], "full": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for _ in range(args.reps):
            times["bare"].append(bare_loop(cfg_bare, bundle))
            times["light"].append(engine_run(cfg_light, bundle, root))
            times["full"].append(engine_run(cfg_full, bundle, root))
        rate = write_rate(root)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    res = {
        "epochs": args.epochs,
        "reps": args.reps,
        "bare_s": med["bare"],
        "engine_default_logging_s": med["light"],
        "engine_full_diagnostics_s": med["full"],
        "ratio_default_logging": med["light"] / med["bare"],
        "ratio_full_diagnostics": med["full"] / med["bare"],
        "ratio_default_logging_min": best["light"] / best["bare"],
        "ratio_full_diagnostics_min": best["full"] / best["bare"],
        "heavy": args.heavy,
        "store_write_rows_per_s": rate,
        "torch_threads": torch.get_num_threads(),
    }
    print(f"workload: {'heavy (hidden 512, 6000 train)' if args.heavy else 'default preset'}, {args.epochs} epochs, {args.reps} rounds")
    print(f"bare loop                  median {med['bare']:.2f} s  min {best['bare']:.2f} s")
    print(f"engine (default logging)   median {med['light']:.2f} s  min {best['light']:.2f} s   ratio {res['ratio_default_logging']:.3f} (min/min {res['ratio_default_logging_min']:.3f})")
    print(f"engine (full diagnostics)  median {med['full']:.2f} s  min {best['full']:.2f} s   ratio {res['ratio_full_diagnostics']:.3f} (min/min {res['ratio_full_diagnostics_min']:.3f})")
    print(f"run-store write rate       {rate:,.0f} rows/s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
