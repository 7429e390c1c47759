"""What the encoder probes cost, as a ratio of one bare training epoch on the default preset.

Two kinds of probe (:meth:`modalscope.diagnostics.monitor.DiagnosticsMonitor.probes`):

* **own pass** — a no-grad pass of every encoder over the train, valid and test splits, then
  one ridge solve per modality (class + bit targets together). The init probe is of this
  kind, and so is every probe when no evaluation pass over the train split runs;
* **reusing the evaluation** — the epoch's evaluation passes keep the encoder outputs
  (forward hooks), so a probe costs the solves plus the hooks' copies. With the default
  diagnostics (gap on the train split every epoch) every epoch-end probe is of this kind. The bare epoch is the loop of ``benchmarks/overhead.py``
(same model, data and optimiser, plus the per-epoch test evaluation), timed over
``--epochs`` epochs. Bare loop and probe are alternated for ``--reps`` rounds so load drift
hits both; the minimum wall time (least disturbed) and the process CPU time are reported.

Per-run overhead at the default cadence: a run of E epochs probes ``1 + #{e : (e+1) % k = 0
or e = E−1}`` times (init, every k-th epoch, last), so

    overhead = (t_own + (n_probes − 1) · t_reuse) / (E · t_bare_epoch).

The 1-minute load average before and after is stored: timings taken while the machine was
busy are marked ``under_load`` and must be re-measured on an idle machine before quoting.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/probe_cost.py [--epochs 10] [--reps 5] [--json benchmarks/results/probe_cost.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import doctables  # noqa: E402
from benchmarks.overhead import bare_loop  # noqa: E402
from modalscope.config import resolve_config  # noqa: E402
from modalscope.engine import Trainer, build_bundle  # noqa: E402

RESULT = doctables.ROOT / "benchmarks" / "results" / "probe_cost.json"
RUN_EPOCHS = 20


def n_probes(epochs: int, every: int) -> int:
    return 1 + sum(1 for e in range(epochs) if (e + 1) % every == 0 or e == epochs - 1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the bare loop per round")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. data.n_train=15000")
    ap.add_argument("--json", default=str(RESULT), help="write the figures to this file ('' = don't)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    cfg = resolve_config(base={"epochs": args.epochs, "log": {"progress": False}, "device": "cpu"}, overrides=args.set)
    bundle = build_bundle(cfg)
    keys = ("bare_epoch", "probe_own_pass", "probe_reusing_eval", "eval_pass", "eval_pass_keeping_features")
    wall: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}

    def timed(key, fn):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        wall[key].append(time.perf_counter() - t0)
        cpu[key].append(time.process_time() - c0)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, bundle=bundle, run_dir=Path(tmp) / "probe")
        trainer.diagnostics.probes()  # warm-up
        bare_loop(cfg, bundle)
        splits = list(bundle.splits)
        for _ in range(args.reps):
            timed("bare_epoch", lambda: bare_loop(cfg, bundle))
            wall["bare_epoch"][-1] /= args.epochs
            cpu["bare_epoch"][-1] /= args.epochs
            timed("probe_own_pass", trainer.diagnostics.probes)
            timed("eval_pass", lambda: [trainer.predict_split(s) for s in splits])
            evals = timed("eval_pass_keeping_features", lambda: {s: trainer.predict_split(s, features=True) for s in splits})
            timed("probe_reusing_eval", lambda: trainer.diagnostics.probes(evals))
        trainer.writer.close("finished")
    load_after = os.getloadavg()[0]
    every = cfg.diagnostics.probe_every
    k = n_probes(RUN_EPOCHS, every)
    best = {n: min(v) for n, v in wall.items()}
    cpu_med = {n: statistics.median(v) for n, v in cpu.items()}
    for d in (best, cpu_med):  # the reusing probe also pays for the hooks' copies in the evaluation pass
        d["probe_reusing_eval"] += max(0.0, d["eval_pass_keeping_features"] - d["eval_pass"])
    own_wall, own_cpu = best["probe_own_pass"] / best["bare_epoch"], cpu_med["probe_own_pass"] / cpu_med["bare_epoch"]
    reuse_wall, reuse_cpu = best["probe_reusing_eval"] / best["bare_epoch"], cpu_med["probe_reusing_eval"] / cpu_med["bare_epoch"]
    res = {
        "preset": getattr(cfg.data, "preset", cfg.data.name),
        "splits": {s: len(d) for s, d in bundle.splits.items()},
        "modalities": bundle.modalities,
        "epochs_per_round": args.epochs, "reps": args.reps, "overrides": args.set,
        "seconds_min": best, "cpu_seconds_median": cpu_med,
        "probe_own_pass_per_bare_epoch_wall_min": own_wall, "probe_own_pass_per_bare_epoch_cpu": own_cpu,
        "probe_reusing_eval_per_bare_epoch_wall_min": reuse_wall, "probe_reusing_eval_per_bare_epoch_cpu": reuse_cpu,
        "probe_every": every, "run_epochs": RUN_EPOCHS, "probes_per_run": k,
        "run_overhead_wall_min": (own_wall + (k - 1) * reuse_wall) / RUN_EPOCHS,
        "run_overhead_cpu": (own_cpu + (k - 1) * reuse_cpu) / RUN_EPOCHS,
        "run_overhead_all_own_pass_cpu": k * own_cpu / RUN_EPOCHS,
        "cpu_count": os.cpu_count(), "loadavg_1min_before": load_before, "loadavg_1min_after": load_after,
        "under_load": max(load_before, load_after) > 0.5 * (os.cpu_count() or 1),
    }
    print(f"default preset {res['preset']} {res['splits']}: bare epoch {best['bare_epoch'] * 1000:.1f} ms; "
          f"probe with its own pass {best['probe_own_pass'] * 1000:.1f} ms = {own_wall:.3f} bare epochs ({own_cpu:.3f} by CPU), "
          f"reusing the evaluation {best['probe_reusing_eval'] * 1000:.1f} ms = {reuse_wall:.3f} ({reuse_cpu:.3f} by CPU)")
    print(f"{k} probes in a {RUN_EPOCHS}-epoch run (probe_every={every}): +{100 * res['run_overhead_wall_min']:.1f} % of a bare run "
          f"(+{100 * res['run_overhead_cpu']:.1f} % by CPU time)")
    if res["under_load"]:
        print(f"WARNING: measured under load (1-min load average {max(load_before, load_after):.1f} on {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


@doctables.renderer("probe_cost")
def render() -> str:
    r = json.loads(RESULT.read_text())
    note = " (measured under load: re-measure on an idle machine)" if r["under_load"] else ""
    sec = r["seconds_min"]
    rows = [
        ["bare epoch", f"{sec['bare_epoch'] * 1000:.1f} ms", "1", "1"],
        ["probe with its own encoder pass (init)", f"{sec['probe_own_pass'] * 1000:.1f} ms",
         f"{r['probe_own_pass_per_bare_epoch_wall_min']:.2f}", f"{r['probe_own_pass_per_bare_epoch_cpu']:.2f}"],
        ["probe reusing the evaluation pass", f"{sec['probe_reusing_eval'] * 1000:.1f} ms",
         f"{r['probe_reusing_eval_per_bare_epoch_wall_min']:.2f}", f"{r['probe_reusing_eval_per_bare_epoch_cpu']:.2f}"],
        [f"{r['probes_per_run']} probes in a {r['run_epochs']}-epoch run (probe_every={r['probe_every']}), share of a bare run", "",
         f"+{100 * r['run_overhead_wall_min']:.1f} %", f"+{100 * r['run_overhead_cpu']:.1f} %"],
    ]
    splits = ", ".join(f"{k} {v}" for k, v in r["splits"].items())
    return (f"Preset `{r['preset']}` ({splits} samples), one CPU thread{note}.\n\n"
            + doctables.table(["", "wall (min)", "× bare epoch (wall)", "× bare epoch (CPU)"], rows))


if __name__ == "__main__":
    main()
    for doc in ("docs/diagnostics.md", "docs/benchmarks.md"):
        doctables.write_block(doc, "probe_cost")
