"""Where the engine's time goes beyond a bare loop: per step, per epoch, per run, and a profile.

The overhead benchmark (``benchmarks/overhead.py``) gives whole-run ratios; this script splits
them, so a note or a doc can say which part a ratio comes from:

* **per step**: ``Trainer._train_step`` against a bare step (zero_grad, forward, fused
  cross-entropy, backward, SGD step) on the same fixed batches and the same model, with
  default logging, and with default logging minus the gradient norms (``diagnostics.grad``
  off); alternated in blocks of ``--steps`` steps for ``--rounds`` rounds; the median over
  rounds of each round's difference is reported;
* **per epoch**: ``Trainer.evaluate`` (valid and test, keeping every logit) against the bare
  loop's evaluation (fused accuracy only), alternated the same way;
* **per run**: opening and closing a run store (``RunWriter``);
* **profile**: cProfile of one in-process default run (full diagnostics, the default preset),
  cumulative seconds of the functions named in ``PROFILED`` (profiler overhead included, so
  compare them with each other, not with the timings above).

Process CPU time, one torch thread. Output: JSON (default ``benchmarks/results/engine_profile.json``).

Usage: ``python benchmarks/engine_profile.py [--rounds 15] [--steps 200]``
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.overhead import LIGHT, evaluate_splits  # noqa: E402
from modalscope.config import resolve_config  # noqa: E402
from modalscope.data import BatchLoader, move_batch  # noqa: E402
from modalscope.engine import Trainer, build_bundle  # noqa: E402
from modalscope.store import RunWriter  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "engine_profile.json"
PROFILED = {
    "fit": "engine.py:.*\\(fit\\)",
    "train steps": "engine.py:.*\\(_train_step\\)",
    "evaluate (valid + test)": "engine.py:.*\\(evaluate\\)",
    "diagnostics per epoch": "diagnostics/monitor.py:.*\\(on_epoch_end\\)",
    "gap histograms + GMM + snapshot": "diagnostics/monitor.py:.*\\(gap_diagnostics\\)",
    "GMM fits": "diagnostics/gmm.py:.*\\(fit_gap_mixture\\)",
    "Shapley contributions": "diagnostics/monitor.py:.*\\(contributions\\)",
    "encoder probes": "diagnostics/monitor.py:.*\\(probes\\)",
    "conflict cosines": "diagnostics/monitor.py:.*\\(before_backward\\)",
}


def _cfg(diagnostics: dict, epochs: int = 1):
    return resolve_config(base={"epochs": epochs, "log": {"progress": False}, "device": "cpu", "diagnostics": diagnostics})


def per_step(bundle, rounds: int, steps: int) -> dict:
    batches = list(BatchLoader(bundle.splits["train"], 64, shuffle=True, seed=0))[:20]
    trainers = {k: Trainer(_cfg(d), bundle=bundle, run_dir=Path(tempfile.mkdtemp()) / k)
                for k, d in (("default logging", LIGHT), ("default logging, no gradient norms", {**LIGHT, "grad": False}))}
    for t in trainers.values():
        t.monitor.start_epoch(0)
    model = next(iter(trainers.values())).model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def bare() -> float:
        c = time.process_time()
        for i in range(steps):
            b = batches[i % len(batches)]
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(b).fused, b["label"]).backward()
            opt.step()
        return (time.process_time() - c) / steps

    def engine(t) -> float:
        c = time.process_time()
        for i in range(steps):
            t._train_step(move_batch(batches[i % len(batches)], t.device), 0)
        return (time.process_time() - c) / steps

    ms: dict[str, list[float]] = {"bare": [], **{k: [] for k in trainers}}
    for _ in range(rounds):
        gc.collect()
        ms["bare"].append(1000 * bare())
        for k, t in trainers.items():
            gc.collect()
            ms[k].append(1000 * engine(t))
    for t in trainers.values():
        t.writer.close("finished")
    return {"ms_per_step": ms, "median_ms": {k: statistics.median(v) for k, v in ms.items()},
            "median_extra_ms": {k: statistics.median(a - b for a, b in zip(v, ms["bare"])) for k, v in ms.items() if k != "bare"}}


def per_epoch(bundle, rounds: int) -> dict:
    t = Trainer(_cfg(LIGHT), bundle=bundle, run_dir=Path(tempfile.mkdtemp()) / "eval")
    t.model.eval()
    ms: dict[str, list[float]] = {"bare evaluation": [], "Trainer.evaluate": []}
    for _ in range(rounds):
        for k, f in (("bare evaluation", lambda: evaluate_splits(t.model, bundle)), ("Trainer.evaluate", lambda: t.evaluate(0))):
            gc.collect()
            c = time.process_time()
            f()
            ms[k].append(1000 * (time.process_time() - c))
    t.writer.close("finished")
    return {"ms_per_epoch": ms, "median_ms": {k: statistics.median(v) for k, v in ms.items()},
            "median_extra_ms": statistics.median(a - b for a, b in zip(ms["Trainer.evaluate"], ms["bare evaluation"]))}


def per_run(rounds: int) -> dict:
    root = Path(tempfile.mkdtemp())
    opened, closed = [], []
    for i in range(rounds):
        c = time.process_time()
        w = RunWriter(root / f"r{i}", heartbeat_seconds=3600)
        opened.append(1000 * (time.process_time() - c))
        c = time.process_time()
        w.close("finished")
        closed.append(1000 * (time.process_time() - c))
    return {"store_open_ms": statistics.median(opened), "store_close_ms": statistics.median(closed),
            "store_open_all_ms": opened, "store_close_all_ms": closed}


def profile(bundle) -> dict:
    cfg = resolve_config(base={"log": {"progress": False}, "device": "cpu"})
    t = Trainer(cfg, bundle=bundle, run_dir=Path(tempfile.mkdtemp()) / "profiled")
    pr = cProfile.Profile()
    pr.enable()
    t.fit()
    pr.disable()
    stats = pstats.Stats(pr).stats
    import re

    out = {}
    for label, pat in PROFILED.items():
        rx = re.compile(pat)
        hits = [(v[3], v[1]) for (f, line, fn), v in stats.items() if rx.search(f"{f}:{line}({fn})")]
        out[label] = {"cumulative_s": sum(h[0] for h in hits), "calls": sum(h[1] for h in hits)}
    return {"epochs": cfg.epochs, "functions": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", default=str(OUT))
    a = ap.parse_args()
    torch.set_num_threads(1)
    bundle = build_bundle(_cfg(LIGHT))
    load0 = os.getloadavg()[0]
    res = {"rounds": a.rounds, "steps_per_block": a.steps, "torch_threads": 1, "cpu_count": os.cpu_count(),
           "per_step": per_step(bundle, a.rounds, a.steps), "per_epoch": per_epoch(bundle, a.rounds),
           "per_run": per_run(a.rounds), "profile_default_run": profile(bundle),
           "load_average_1min_start_end": [load0, os.getloadavg()[0]]}
    Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("load_average_1min_start_end",)} | {
        "per_step_median_ms": res["per_step"]["median_ms"], "per_step_extra_ms": res["per_step"]["median_extra_ms"],
        "per_epoch_median_ms": res["per_epoch"]["median_ms"], "per_run": {k: v for k, v in res["per_run"].items() if not k.endswith("all_ms")},
        "profile": res["profile_default_run"]}, indent=2))


if __name__ == "__main__":
    main()
