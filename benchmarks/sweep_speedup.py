"""Wall time of one sweep run sequentially, with a 2-process pool and on a local Ray runtime.

The same 8-trial sweep (``joint`` and ``unimodal:visual`` × 4 seeds on the default
synthetic preset, ``--epochs`` epochs, default diagnostics) is run three times back to back,
each time as the user would: ``python -m modalscope sweep SPEC --runs-dir <fresh dir>`` with

* ``--workers 1`` (trials one after another in the sweep process),
* ``--workers 2`` (spawn process pool of 2),
* ``--executor ray --workers 2`` (local Ray runtime with 2 CPUs, 1 CPU per trial),

so start-up, imports, pool spawn and ``ray.init`` are all inside the measured time. Every
trial uses 1 torch thread (the sweep default; ``OMP_NUM_THREADS=1`` for all three). The
machine's load average before and after each variant is printed, because on a shared
machine other people's jobs change the ratios, and so is the CPU time the command tree got
(``getrusage(RUSAGE_CHILDREN)``; CPU/wall near 2 means both cores were ours; not available
for Ray, whose workers are not children of the command). One run each.

Usage: ``python benchmarks/sweep_speedup.py [--epochs 40] [--seeds 4] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = [
    ("sequential (--workers 1)", ["--workers", "1"]),
    ("local pool (--workers 2)", ["--workers", "2"]),
    ("Ray local (--executor ray --workers 2)", ["--executor", "ray", "--workers", "2"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    spec = {
        "name": "speedup",
        "base": {"dataset": "synthetic", "preset": "imbalanced", "epochs": args.epochs, "method.modality": "visual"},
        "grid": {"method": ["joint", "unimodal"], "seed": list(range(args.seeds))},
    }
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["OMP_NUM_THREADS"] = "1"
    rows = []
    with tempfile.TemporaryDirectory(prefix="modalscope-speedup-") as tmp:
        spec_path = Path(tmp) / "speedup.yaml"
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        for i, (label, flags) in enumerate(VARIANTS):
            runs = Path(tmp) / f"runs{i}"
            load0 = os.getloadavg()[0]
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "modalscope", "sweep", str(spec_path), "--runs-dir", str(runs), "--no-progress", *flags],
                               capture_output=True, text=True, env=env, cwd=ROOT)
            wall = time.perf_counter() - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            if "ray" in flags:
                cpu = float("nan")  # Ray's workers are children of its raylet, not reaped into this count
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                raise SystemExit(f"{label} failed with exit {r.returncode}")
            table = [line.split() for line in r.stdout.strip().splitlines()[1:]]
            accs = [float(row[3]) for row in table]
            trial_s = sum(float(row[4]) for row in table)
            sweep_s = float(r.stderr.strip().splitlines()[-1].split()[-1].rstrip("s"))
            rows.append({"variant": label, "wall_s": wall, "cpu_s": cpu, "sweep_s": sweep_s, "trial_s_sum": trial_s, "load_before": load0,
                         "load_after": os.getloadavg()[0], "trials": len(accs), "mean_acc_fused": sum(accs) / len(accs)})
            print(f"{label:<40} {wall:7.1f} s (cpu {cpu:.1f} s, sweep {sweep_s:.1f} s, sum of trials {trial_s:.1f} s)"
                  f"   load {load0:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    base = rows[0]["wall_s"]
    for row in rows:
        row["speedup_vs_sequential"] = base / row["wall_s"]
    print()
    print(f"{'variant':<40} {'wall s':>8} {'speed-up':>9} {'CPU s':>7} {'CPU/wall':>9} {'mean acc':>9}")
    for row in rows:
        print(f"{row['variant']:<40} {row['wall_s']:8.1f} {row['speedup_vs_sequential']:8.2f}x {row['cpu_s']:7.1f}"
              f" {row['cpu_s'] / row['wall_s']:9.2f} {row['mean_acc_fused']:9.4f}")
    out = {"cpus": os.cpu_count(), "epochs": args.epochs, "trials": rows[0]["trials"], "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
