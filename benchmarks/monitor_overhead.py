"""Cost of the Monitor on the docs/examples/own_loop.py loop, against the bare loop and TensorBoard.

Three variants of the same loop (same model, mfeat pix+mor data, SGD, batch 64, a test
prediction each epoch), alternated in one process for ``--reps`` rounds (the order rotates
from round to round, and garbage is collected before each timed run); the median wall
time of each is reported as a ratio to the bare loop, so machine load drifts hit every
variant alike. Both wall time and the process's CPU time are recorded; on a loaded machine
CPU time is the stable one (it excludes time spent waiting for a core):

* ``bare``: the plain loop;
* ``monitor``: plus :class:`modalscope.monitor.Monitor` at its defaults (per-step loss and
  gradient norms/shares staged on the device and written in batches, conflict cosines every
  50 steps, per-epoch gap histograms, GMM and per-sample snapshot on train and test);
* ``monitor_light``: the monitor with ``diagnostics={"conflict_every": 100, "samples": False}``
  (cosines every 100 steps, no per-sample snapshot; everything else as above);
* ``tensorboard``: plus ``torch.utils.tensorboard.SummaryWriter`` logging the same per-step
  scalars (loss, per-modality and fusion gradient norms, shares, ratio, flag) and the
  per-epoch accuracies, computed by hand in the loop, as a user would without ModalScope.
  (TensorBoard gets no conflict cosines, gap or GMM: it has no notion of modalities.)

The example's model is tiny (a bare step takes about a millisecond on one CPU thread), so the
monitor's fixed per-step and per-epoch costs weigh heavily; ``--hidden`` repeats the
comparison with wider branches (a slower step, closer to a real encoder) to show how the
ratio falls as the step gets more expensive.

Usage: ``python benchmarks/monitor_overhead.py [--epochs 5] [--reps 5] [--hidden 32 256 1024 4096] [--json docs/monitor_overhead.json]``
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks import doctables  # noqa: E402
from benchmarks.overhead import paired_ratio  # noqa: E402

JSON = ROOT / "docs" / "monitor_overhead.json"
LIGHT = {"conflict_every": 100, "samples": False}
EPOCH_END_CPU: list[float] = [0.0]
CLOSE_CPU: list[float] = [0.0]


def _example():
    spec = importlib.util.spec_from_file_location("own_loop", ROOT / "docs" / "examples" / "own_loop.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_loop(ex, data, variant: str, epochs: int, out: Path, batch: int = 64, hidden: int = 32) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the training loop, store creation excluded."""
    torch.manual_seed(0)
    model = ex.TwoBranch(h=hidden)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xp, xm, y = data["train"]
    mon = tb = None
    if variant.startswith("monitor"):
        from modalscope.monitor import Monitor

        diag = LIGHT if variant == "monitor_light" else None
        mon = Monitor(out / "mon", ["pix", "mor"], {"pix": model.pix, "mor": model.mor}, fusion=model.head, epochs=epochs, diagnostics=diag)
    elif variant == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tb"))
        groups = {"pix": list(model.pix.parameters()), "mor": list(model.mor.parameters()), "fusion": list(model.head.parameters())}
    gc.collect()  # the previous variant's garbage is not collected on this variant's clock
    t0, c0 = time.perf_counter(), time.process_time()
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            fused, logits = model(xp[idx], xm[idx])
            loss = F.cross_entropy(fused, y[idx])
            opt.zero_grad()
            if mon is not None:
                mon.backward(loss, fused=fused, logits=logits, labels=y[idx], ids=idx)
            else:
                loss.backward()
            if tb is not None:
                norms = {k: float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ps]))) for k, ps in groups.items()}
                tb.add_scalar("loss/total", float(loss.detach()), step)
                tot = norms["pix"] + norms["mor"]
                for k, v in norms.items():
                    tb.add_scalar(f"grad_norm/{k}", v, step)
                for k in ("pix", "mor"):
                    tb.add_scalar(f"grad_share/{k}", norms[k] / tot, step)
                hi, lo = max(norms["pix"], norms["mor"]), min(norms["pix"], norms["mor"])
                tb.add_scalar("grad_ratio", hi / lo, step)
                tb.add_scalar("conflict/flag", float(hi / lo > 2), step)
            opt.step()
            step += 1
        with torch.no_grad():
            zf, zl = model(*data["test"][:2])
        yt = data["test"][2]
        if mon is not None:
            c1 = time.process_time()
            mon.epoch_end(test={"fused": zf, "logits": zl, "labels": yt})
            EPOCH_END_CPU[-1] += time.process_time() - c1
        if tb is not None:
            tb.add_scalar("acc/test/fused", float((zf.argmax(1) == yt).float().mean()), step)
            for m, z in zl.items():
                tb.add_scalar(f"acc/test/{m}", float((z.argmax(1) == yt).float().mean()), step)
    if mon is not None:
        c1 = time.process_time()
        mon.close()
        CLOSE_CPU[-1] += time.process_time() - c1
    if tb is not None:
        tb.close()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32, 256, 1024, 4096], help="branch widths (32 = the example)")
    ap.add_argument("--json", default=str(JSON))
    a = ap.parse_args()
    torch.set_num_threads(1)
    ex = _example()
    data = ex.load(0)
    variants = ["bare", "monitor", "monitor_light", "tensorboard"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for h in a.hidden:
            wall: dict[str, list[float]] = {v: [] for v in variants}
            cpu: dict[str, list[float]] = {v: [] for v in variants}
            epoch_cpu: list[float] = []
            close_cpu: list[float] = []
            for r in range(a.reps + 1):  # round 0 warms up imports and caches; not counted
                for v in variants[r % len(variants):] + variants[: r % len(variants)]:  # a different order each round
                    EPOCH_END_CPU.append(0.0)
                    CLOSE_CPU.append(0.0)
                    w, c = run_loop(ex, data, v, a.epochs, Path(tmp) / f"{h}-{r}-{v}", hidden=h)
                    if r:
                        wall[v].append(w)
                        cpu[v].append(c)
                        if v == "monitor":
                            epoch_cpu.append(EPOCH_END_CPU[-1])
                            close_cpu.append(CLOSE_CPU[-1])
            med = {v: statistics.median(ts) for v, ts in wall.items()}
            mcpu = {v: statistics.median(ts) for v, ts in cpu.items()}
            paired = {v: paired_ratio(wall[v], wall["bare"]) for v in variants}
            cpaired = {v: paired_ratio(cpu[v], cpu["bare"]) for v in variants}
            steps = a.epochs * 22
            per_epoch_ms = 1000 * statistics.median(epoch_cpu) / a.epochs
            close_ms = 1000 * statistics.median(close_cpu)
            extra = statistics.median(m - b for m, b in zip(cpu["monitor"], cpu["bare"]))
            per_step_ms = (1000 * extra - per_epoch_ms * a.epochs - close_ms) / steps
            rows.append({"hidden": h, "monitor_epoch_end_ms": per_epoch_ms, "monitor_step_overhead_ms": per_step_ms, "monitor_close_ms": close_ms,
                         "seconds": wall, "cpu_seconds": cpu, "median_seconds": med, "median_cpu_seconds": mcpu,
                         "ms_per_bare_step": 1000 * mcpu["bare"] / (a.epochs * 22),
                         "ratio_to_bare": {v: r[0] for v, r in paired.items()},
                         "cpu_ratio_to_bare": {v: r[0] for v, r in cpaired.items()},
                         "cpu_ratio_quartiles": {v: r[1:] for v, r in cpaired.items()}})
    res = {
        "epochs": a.epochs, "reps": a.reps, "steps": a.epochs * 22, "torch_threads": 1,
        "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "note": "ratios are medians of interleaved rounds in one process; load_average_1min says how busy the machine was",
        "rows": rows,
    }
    Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    doctables.write_block(ROOT / "docs" / "your_model.md", "monitor_overhead")
    print(json.dumps([{"hidden": r["hidden"], "wall": r["ratio_to_bare"], "cpu": r["cpu_ratio_to_bare"]} for r in rows], indent=2))


@doctables.renderer("monitor_overhead")
def render() -> str:
    res = json.loads(JSON.read_text())
    rows = []
    for r in res["rows"]:
        label = "example (hidden 32)" if r["hidden"] == 32 else f"hidden {r['hidden']}"
        cpu, wall = r["cpu_ratio_to_bare"], r["ratio_to_bare"]
        iqr = r.get("cpu_ratio_quartiles", {})
        rows.append([label, f"{r['ms_per_bare_step']:.2f}"] + [f"{cpu[v]:.2f}× ({wall[v]:.2f}×)" + (f" [{iqr[v][0]:.2f}–{iqr[v][1]:.2f}]" if v in iqr else "")
                                                                 for v in ("monitor", "monitor_light", "tensorboard")])
    head = ["model", "bare CPU ms/step", "monitor", "monitor light", "TensorBoard"]
    out = doctables.table(head, rows) + (
        f"\nRatios to the bare loop: CPU time of the process (wall time in round brackets), the median over rounds of "
        f"each round's ratio, with the quartiles of those ratios in square brackets. {res['epochs']} epochs × 22 steps, "
        f"{res['reps']} interleaved rounds, 1 torch thread; 1-min load average {res['load_average_1min']:.1f} on "
        f"{res['cpu_count']} cores"
        + (": a shared machine under load, where wall times mostly measure the other jobs, so CPU time is the figure to read.\n"
           if res["load_average_1min"] > 1.5 else " (a quiet machine).\n")
    )
    parts = [[("example (hidden 32)" if r["hidden"] == 32 else f"hidden {r['hidden']}"), f"{r['ms_per_bare_step']:.2f}", f"{r['monitor_step_overhead_ms']:.3f}",
              f"{r['monitor_epoch_end_ms']:.1f}", f"{r['monitor_close_ms']:.1f}" if "monitor_close_ms" in r else "–"] for r in res["rows"]]
    return out + "\nWhere the monitor's time goes (CPU, default settings):\n\n" + doctables.table(
        ["model", "bare step (ms)", "monitor per step (ms, conflict cosines amortised)",
         "per epoch_end (ms: accuracies, 2 gap histograms + GMM fits, snapshot)", "close (ms: last rows, WAL checkpoint)"], parts)


if __name__ == "__main__":
    main()
