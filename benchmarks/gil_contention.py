"""Why the epoch-end diagnostics run inline: a Python worker thread slows the training loop it sits beside.

The obvious way to take the per-epoch gap analysis (histograms, GMM fits, snapshot) off the
training loop is a worker thread, as TensorBoard's ``SummaryWriter`` does for its file
writes. This script measures what that would cost. The same small training loop
(``docs/examples/own_loop.py``'s model, 5 epochs) is timed, wall clock, while another thread
of the same process runs, back to back:

* ``none``: no second thread (the reference);
* ``sleep``: a thread that only sleeps (what the store's heartbeat thread does);
* ``gmm``: a thread fitting the diagnostics' gap mixture (``fit_gap_mixture``, 1 400
  gaps, numpy) over and over: the work a background analysis would do.

Each variant runs ``--reps`` times, alternated; medians are reported. A thread that holds
the GIL for numpy's Python-level work takes the interpreter from a loop that needs it between
every small torch operation, so the loop slows down even with a free core: the diagnostics
stay on the loop's thread (and are made cheap there) rather than moved to a thread.

Usage: ``python benchmarks/gil_contention.py [--reps 9] [--json docs/gil_contention.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import doctables  # noqa: E402
from benchmarks.monitor_overhead import _example  # noqa: E402

JSON = ROOT / "docs" / "gil_contention.json"
VARIANTS = ("none", "sleep", "gmm")


def _loop(ex, data, epochs: int = 5, batch: int = 64) -> float:
    torch.manual_seed(0)
    model = ex.TwoBranch()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xp, xm, y = data["train"]
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            fused, _ = model(xp[idx], xm[idx])
            loss = torch.nn.functional.cross_entropy(fused, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def _worker(kind: str, stop: threading.Event, gaps: np.ndarray) -> None:
    from modalscope.diagnostics.gmm import fit_gap_mixture

    while not stop.is_set():
        if kind == "sleep":
            time.sleep(0.001)
        else:
            fit_gap_mixture(gaps, backend="vector")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--json", default=str(JSON))
    a = ap.parse_args()
    torch.set_num_threads(1)
    ex = _example()
    data = ex.load(0)
    rng = np.random.default_rng(0)
    gaps = np.concatenate([rng.normal(0.05, 0.1, 700), rng.normal(0.85, 0.08, 700)]).clip(-1, 1)
    _loop(ex, data)
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(a.reps):
        for v in VARIANTS:
            stop = threading.Event()
            th = None if v == "none" else threading.Thread(target=_worker, args=(v, stop, gaps), daemon=True)
            if th is not None:
                th.start()
            wall[v].append(_loop(ex, data))
            stop.set()
            if th is not None:
                th.join()
    med = {v: statistics.median(ts) for v, ts in wall.items()}
    res = {"reps": a.reps, "torch_threads": 1, "cpu_count": os.cpu_count(), "python": platform.python_version(),
           "switch_interval_s": sys.getswitchinterval(), "load_average_1min": os.getloadavg()[0],
           "wall_seconds": wall, "median_wall_seconds": med, "ratio_to_none": {v: med[v] / med["none"] for v in VARIANTS}}
    Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    doctables.write_block(ROOT / "docs" / "benchmarks.md", "gil_contention")
    print(json.dumps(res["ratio_to_none"], indent=2))


@doctables.renderer("gil_contention")
def render() -> str:
    res = json.loads(JSON.read_text())
    label = {"none": "no second thread", "sleep": "a sleeping thread (the heartbeat)", "gmm": "a thread fitting gap mixtures (a background analysis)"}
    rows = [[label[v], f"{1000 * res['median_wall_seconds'][v]:.0f}", f"{res['ratio_to_none'][v]:.2f}×"] for v in VARIANTS]
    return doctables.table(["beside the training loop", "loop wall ms (median)", "vs none"], rows) + (
        f"\nThe example loop (5 epochs × 22 steps), median of {res['reps']} alternated runs, 1 torch thread, "
        f"{res['cpu_count']} cores, Python {res['python']} (switch interval {1000 * res['switch_interval_s']:g} ms); "
        f"1-min load average {res['load_average_1min']:.1f}.\n")


if __name__ == "__main__":
    main()
