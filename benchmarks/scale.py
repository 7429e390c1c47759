"""Trainer memory over a long run: resident memory must stay flat, not grow with the step count.

A real ``Trainer`` run at default diagnostics on a small synthetic dataset sized so that a run
has ``--steps`` training steps (1 000 steps per epoch: every per-step series, per-epoch gap
histograms, GMM fits, per-sample snapshots, contributions and probes at their default
cadence). After every epoch the process's resident set size is read from
``/proc/self/statm``; reported are the peak RSS, the RSS after the first epoch, at half way
and at the end, and the growth over the second half of the run (what an unbounded buffer
would show as a steady slope).

Usage: ``python benchmarks/scale.py [--steps 100000] [--json docs/scale_bench.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import doctables  # noqa: E402

DOC_JSON = ROOT / "docs" / "scale_bench.json"
STEPS_PER_EPOCH = 1000
BATCH = 16


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from modalscope.config import resolve_config
    from modalscope.engine import Trainer

    epochs = max(2, args.steps // STEPS_PER_EPOCH)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config(base={
            "runs_dir": tmp, "name": "scale", "epochs": epochs, "batch_size": BATCH, "device": "cpu",
            "data": {"name": "synthetic", "n_train": STEPS_PER_EPOCH * BATCH, "n_valid": 200, "n_test": 400,
                     "dims": {"audio": 8, "visual": 8}},
            "model": {"hidden": 16, "embed_dim": 8, "depth": 1},
            "log": {"progress": False},
        })
        t = Trainer(cfg)
        samples: list[tuple[int, float]] = [(0, rss_mb())]
        orig = t._run_epoch

        def run_epoch(epoch, bar):
            out = orig(epoch, bar)
            samples.append((t.global_step, rss_mb()))
            if epoch % 10 == 0:
                print(f"epoch {epoch + 1}/{epochs} step {t.global_step} rss {samples[-1][1]:.0f} MB", flush=True)
                if args.json:  # partial trace, in case the run is stopped before the end
                    Path(args.json + ".partial").write_text(json.dumps({"epochs_planned": epochs, "rss_trace": samples}))
            return out

        t._run_epoch = run_epoch
        t0 = time.perf_counter()
        t.fit()
        wall = time.perf_counter() - t0
        from modalscope.store import open_run

        counts = open_run(t.run_dir).counts()
    half = next(r for s, r in samples if s >= samples[-1][0] // 2)
    res = {
        "steps": samples[-1][0],
        "epochs": epochs,
        "steps_per_epoch": STEPS_PER_EPOCH,
        "wall_s": wall,
        "rss_mb_after_first_epoch": samples[1][1],
        "rss_mb_half_way": half,
        "rss_mb_end": samples[-1][1],
        "growth_mb_second_half": samples[-1][1] - half,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "store_rows": counts,
        "rss_trace": samples,
        "loadavg_1m_end": os.getloadavg()[0],
    }
    print(json.dumps({k: v for k, v in res.items() if k != "rss_trace"}, indent=2))
    if args.json:
        doctables.record(args.json, res, DOC_JSON, "docs/benchmarks.md", "scale")


@doctables.renderer("scale")
def render() -> str:
    r = json.loads(DOC_JSON.read_text())
    rows = [
        ["training steps (epochs × steps per epoch)", f"{r['steps']:,} ({r['epochs']} × {r['steps_per_epoch']:,})"],
        ["scalar / sample rows written", f"{r['store_rows']['scalars']:,} / {r['store_rows']['samples']:,}"],
        ["RSS after the first epoch", f"{r['rss_mb_after_first_epoch']:.0f} MB"],
        ["RSS half way", f"{r['rss_mb_half_way']:.0f} MB"],
        ["RSS at the end", f"{r['rss_mb_end']:.0f} MB"],
        ["growth over the second half", f"{r['growth_mb_second_half']:+.1f} MB"],
        ["peak RSS", f"{r['peak_rss_mb']:.0f} MB"],
    ]
    return doctables.table(["trainer, default diagnostics", "measured"], rows)


if __name__ == "__main__":
    main()
