"""What the diagnostics cost: each family's time against a bare PyTorch loop, and the GMM fit time.

The bare loop is the one of ``benchmarks/overhead.py`` (same model, data, optimiser and
per-epoch test evaluation as the engine). Every variant runs the default preset at the
default cadence; variants are alternated in one process (``--reps`` rounds, in a shuffled
order each round) so machine-load drift hits all of them alike. On a shared machine the
*minimum* wall time over rounds (the least-disturbed run) and the process CPU time (which
other processes' load does not inflate; it leaves out I/O waits such as the checkpoint
fsync) are the figures to quote; wall medians are printed too.

Rows (cumulative, each adds one family to the previous):

* ``engine, grad stats``   — norms, shares, dominance ratio every step (the engine default
  logging of ``overhead.py``);
* ``+ conflict cosines``   — 1 + M extra ``autograd.grad`` every ``conflict_every`` steps;
* ``+ gap, GMM, samples``  — a no-grad pass over the training split, histograms, the
  mixture fits and the per-sample snapshot on train and test every ``gap_every`` epochs;
* ``+ contributions``      — 2^M no-grad forwards on the fixed test batches every epoch;
* ``+ probes``             — linear probes on the encoder features at init, every
  ``probe_every`` epochs and at the last epoch (``benchmarks/probe_cost.py`` times one probe);
* ``full diagnostics``     — plus the captum cross-check (every default on).

Then the median CPU time of :func:`modalscope.diagnostics.gmm.fit_gap_mixture` (numpy EM, the
default, and the scikit-learn backend) on 100 000 gaps.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/diagnostics_cost.py [--epochs 10] [--reps 3] [--set data.n_train=15000] [--json out.json]``

``--gmm-only`` times just the mixture fit, writes ``benchmarks/results/gmm_fit_time.json`` and
the ``gmm_fit_time`` blocks of ``docs/diagnostics.md`` and ``docs/benchmarks.md`` from it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import doctables  # noqa: E402
from benchmarks.overhead import bare_loop, engine_run  # noqa: E402
from modalscope.config import resolve_config  # noqa: E402
from modalscope.engine import build_bundle  # noqa: E402

OFF = {"conflict": False, "gap": False, "samples": False, "gmm": False, "contrib": False, "captum": False, "probe": False}
VARIANTS = {
    "engine, grad stats": OFF,
    "+ conflict cosines": {**OFF, "conflict": True},
    "+ gap, GMM, samples": {**OFF, "conflict": True, "gap": True, "gmm": True, "samples": True},
    "+ contributions": {**OFF, "conflict": True, "gap": True, "gmm": True, "samples": True, "contrib": True},
    "+ probes": {**OFF, "conflict": True, "gap": True, "gmm": True, "samples": True, "contrib": True, "probe": True},
    "full diagnostics": {},
}


def gmm_time(n: int = 100_000, reps: int = 5, backend: str = "numpy") -> float:
    """Median process CPU seconds of one fit (other processes' load does not inflate it)."""
    from modalscope.diagnostics.gmm import fit_gap_mixture

    rng = np.random.default_rng(0)
    k = int(n * 0.7)
    x = np.concatenate([rng.normal(0.0, 0.1, k), rng.normal(0.6, 0.15, n - k)])
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fit_gap_mixture(x, backend=backend)
        times.append(time.process_time() - t0)
    return statistics.median(times)


GMM_JSON = Path(__file__).resolve().parent / "results" / "gmm_fit_time.json"
GMM_REPS = 5


def gmm_only() -> dict:
    res = {"n": 100_000, "reps": GMM_REPS, "threads": torch.get_num_threads(),
           "numpy_s": gmm_time(reps=GMM_REPS, backend="numpy"), "sklearn_s": gmm_time(reps=GMM_REPS, backend="sklearn")}
    GMM_JSON.write_text(json.dumps(res, indent=2) + "\n")
    for doc in ("docs/diagnostics.md", "docs/benchmarks.md"):
        doctables.write_block(doc, "gmm_fit_time")
    return res


@doctables.renderer("gmm_fit_time")
def render_gmm_fit_time() -> str:
    r = json.loads(GMM_JSON.read_text())
    rows = [["numpy EM (default)", f"{r['numpy_s'] * 1000:.0f}"], ["scikit-learn", f"{r['sklearn_s'] * 1000:.0f}"]]
    return doctables.table([f"mixture fit on {r['n']:,} gaps", f"median CPU ms of {r['reps']} runs"], rows)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. data.n_train=15000")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--gmm-only", action="store_true", help="only time the mixture fit (writes its JSON and doc block)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.gmm_only:
        return gmm_only()
    base = {"epochs": args.epochs, "log": {"progress": False}, "device": "cpu"}
    cfg_bare = resolve_config(base=base, overrides=args.set)
    cfgs = {name: resolve_config(base={**base, "diagnostics": d}, overrides=args.set) for name, d in VARIANTS.items()}
    bundle = build_bundle(cfg_bare)
    times: dict[str, list[float]] = {"bare loop": [], **{k: [] for k in cfgs}}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        engine_run(cfgs["full diagnostics"], bundle, root)  # warm-up (imports, captum, allocator)
        order = ["bare loop", *cfgs]
        rng = random.Random(0)
        for _ in range(args.reps):
            rng.shuffle(order)
            for name in order:
                c0 = time.process_time()
                if name == "bare loop":
                    times[name].append(bare_loop(cfg_bare, bundle))
                else:
                    times[name].append(engine_run(cfgs[name], bundle, root))
                cpu[name].append(time.process_time() - c0)
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    res = {
        "epochs": args.epochs, "reps": args.reps, "steps_per_epoch": -(-cfg_bare.data.n_train // cfg_bare.batch_size), "overrides": args.set,
        "seconds_min": best, "seconds_median": med, "cpu_seconds_median": cpu_med,
        "ratio_vs_bare_min": {k: v / best["bare loop"] for k, v in best.items()},
        "ratio_vs_bare_median": {k: v / med["bare loop"] for k, v in med.items()},
        "cpu_ratio_vs_bare": {k: v / cpu_med["bare loop"] for k, v in cpu_med.items()},
        "gmm_fit_100k_numpy_s": gmm_time(reps=GMM_REPS, backend="numpy"), "gmm_fit_100k_sklearn_s": gmm_time(reps=GMM_REPS, backend="sklearn"),
    }
    print(f"{'row':<24}{'wall min':>9}{'ratio':>7}{'wall med':>9}{'ratio':>7}{'CPU med':>9}{'ratio':>7}")
    for k in best:
        print(f"{k:<24}{best[k]:>9.2f}{res['ratio_vs_bare_min'][k]:>7.3f}{med[k]:>9.2f}{res['ratio_vs_bare_median'][k]:>7.3f}"
              f"{cpu_med[k]:>9.2f}{res['cpu_ratio_vs_bare'][k]:>7.3f}")
    print(f"GMM fit on 100 000 gaps: numpy EM {res['gmm_fit_100k_numpy_s'] * 1000:.0f} ms, "
          f"scikit-learn {res['gmm_fit_100k_sklearn_s'] * 1000:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
