"""Engine overhead versus a bare PyTorch loop, and run-store write rate.

Same model (MultimodalModel), same data (the default synthetic preset), same optimiser
(SGD, the RunConfig defaults) and the same per-epoch evaluation (valid and test); the bare loop and the
engine configurations are alternated in one process (``--reps`` rounds, the order rotating
from round to round, garbage collected before each run) and each ratio is the median over
rounds of that round's ratio, so machine speed drifts cancel within a round. Each run's
process CPU time (``time.process_time``, every thread of this process, including the
TensorBoard writer thread) is recorded too: on a machine shared with other jobs it is the
steadier figure, and the docs quote ratios of CPU time.

Rows:
* ``bare + TensorBoard``: the anchor. The bare loop plus the engine's default per-step
  scalars computed by hand and sent through ``torch.utils.tensorboard.SummaryWriter`` (what a
  user would write without ModalScope); ModalScope's default logging must cost no more.
* ``engine (default logging)``: per-step loss / gradient-norm scalars, per-epoch
  accuracies, checkpoints; the heavier diagnostics families switched off.
* ``engine (full diagnostics)``: every diagnostic at its default cadence.

Usage: ``python benchmarks/overhead.py [--epochs 20] [--reps 3] [--json out.json]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import doctables  # noqa: E402

from modalscope.config import resolve_config  # noqa: E402
from modalscope.data import BatchLoader  # noqa: E402
from modalscope.engine import Trainer, build_bundle, seed_everything  # noqa: E402
from modalscope.models import build_model  # noqa: E402
from modalscope.store import RunWriter  # noqa: E402

LIGHT = {"conflict": False, "gap": False, "samples": False, "gmm": False, "contrib": False, "captum": False, "robust": False, "probe": False}


def evaluate_splits(model, bundle) -> dict[str, float]:
    """Fused accuracy on every held-out split the engine evaluates each epoch (valid when the
    dataset has one, and test): the engine needs valid for its best-epoch selection, and a
    hand-written loop that selects an epoch does the same pass."""
    out = {}
    with torch.no_grad():
        for split in ("valid", "test"):
            if split not in bundle.splits:
                continue
            correct = 0
            for batch in BatchLoader(bundle.splits[split], 512, shuffle=False):
                correct += int((model(batch).fused.argmax(1) == batch["label"]).sum())
            out[split] = correct / len(bundle.splits[split])
    return out


def bare_loop(cfg, bundle) -> float:
    seed_everything(cfg.seed)
    model = build_model(cfg, bundle)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    t0, c0 = time.perf_counter(), time.process_time()
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
        acc = evaluate_splits(model, bundle)
    return time.perf_counter() - t0, time.process_time() - c0


def tensorboard_loop(cfg, bundle, logdir: Path) -> float:
    """The bare loop plus the engine's default per-step scalars, logged by hand through TensorBoard.

    What a user would write without ModalScope: the loss parts (``loss/total``, ``loss/fused``,
    ``loss/<m>``), per-group gradient norms, per-modality shares, the dominance ratio and the
    conflict flag, each sent with ``SummaryWriter.add_scalar`` every step; the same per-epoch
    test evaluation, whose accuracy is also logged.
    """
    from torch.utils.tensorboard import SummaryWriter

    from modalscope.diagnostics.gradients import dominance

    seed_everything(cfg.seed)
    model = build_model(cfg, bundle)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    groups = model.param_groups()
    tau = cfg.diagnostics.conflict_tau
    t0, c0 = time.perf_counter(), time.process_time()
    writer = SummaryWriter(str(logdir))
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        loader = BatchLoader(bundle.splits["train"], cfg.batch_size, shuffle=True, seed=cfg.seed)
        loader.set_epoch(epoch)
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            out = model(batch)
            y = batch["label"]
            loss = torch.nn.functional.cross_entropy(out.fused, y)
            loss.backward()
            writer.add_scalar("loss/total", loss.item(), step)
            writer.add_scalar("loss/fused", loss.item(), step)
            with torch.no_grad():
                for m, z in out.logits.items():
                    writer.add_scalar(f"loss/{m}", torch.nn.functional.cross_entropy(z, y).item(), step)
            norms = {}
            for g, params in groups.items():
                n = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])).item()
                name = g.split("/", 1)[1] if g.startswith("encoder/") else g
                writer.add_scalar(f"grad_norm/{name}", n, step)
                if g.startswith("encoder/"):
                    norms[name] = n
            total = sum(norms.values())
            for m, n in norms.items():
                writer.add_scalar(f"grad_share/{m}", n / total if total > 0 else 1.0 / len(norms), step)
            _, r = dominance(norms)
            writer.add_scalar("grad_ratio", min(r, 1e6), step)
            writer.add_scalar("conflict/flag", float(r > tau), step)
            opt.step()
            step += 1
        model.eval()
        acc = evaluate_splits(model, bundle)
        for split, a in acc.items():
            writer.add_scalar(f"acc/{split}/fused", a, step)
    writer.close()
    return time.perf_counter() - t0, time.process_time() - c0


def engine_run(cfg, bundle, root: Path) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    t = Trainer(cfg, bundle=bundle, run_dir=root / f"r{time.perf_counter_ns()}")
    t.fit()
    return time.perf_counter() - t0, time.process_time() - c0


def write_rate(root: Path, n: int = 200_000) -> float:
    """Rows per second of CPU time (this process) through ``RunWriter.log_scalars`` at default batching."""
    w = RunWriter(root)
    c0 = time.process_time()
    for i in range(n // 10):
        w.log_scalars(i, 0, {f"metric/{k}": float(i + k) for k in range(10)})
    w.close("finished")
    return n / (time.process_time() - c0)


def paired_ratio(xs: list[float], base: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the per-round ratios ``x_r / base_r``: each round's variants run
    back to back, so the machine's speed, which drifts by tens of percent over a minute on a
    shared VM, cancels within a round; a ratio of the medians over rounds would not cancel it."""
    q = statistics.quantiles([x / b for x, b in zip(xs, base)], n=4, method="inclusive")
    return q[1], q[0], q[2]


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
    load0 = os.getloadavg()[0]
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        engine_run(cfg_full, bundle, root)  # warm-up: lazy imports, allocator, caches
        tensorboard_loop(cfg_bare, bundle, root / "tb-warm")
        runs = {"bare": lambda i: bare_loop(cfg_bare, bundle), "tensorboard": lambda i: tensorboard_loop(cfg_bare, bundle, root / f"tb{i}"),
                "light": lambda i: engine_run(cfg_light, bundle, root), "full": lambda i: engine_run(cfg_full, bundle, root)}
        order = list(runs)
        for i in range(args.reps):
            for v in order[i % 4:] + order[: i % 4]:  # a different order each round
                gc.collect()  # the previous variant's garbage is not collected on this one's clock
                times[v].append(runs[v](i))
            print(f"round {i + 1}: " + "  ".join(f"{k} {v[-1][0]:.2f} s wall / {v[-1][1]:.2f} s cpu" for k, v in times.items()), flush=True)
        rates = [write_rate(root / f"w{i}") for i in range(3)]
    res = {
        "workload": "heavy" if args.heavy else "default",
        "epochs": args.epochs,
        "reps": args.reps,
        "steps_per_epoch": len(BatchLoader(bundle.splits["train"], cfg_bare.batch_size, shuffle=False)),
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m_start_end": [load0, os.getloadavg()[0]],
        "store_write_rows_per_s": statistics.median(rates),
        "store_write_rows_per_s_all": rates,
    }
    for clock, k in (("wall", 0), ("cpu", 1)):
        med = {v: statistics.median(t[k] for t in times[v]) for v in VARIANTS}
        secs = {v: [t[k] for t in times[v]] for v in VARIANTS}
        to_bare = {v: paired_ratio(secs[v], secs["bare"]) for v in VARIANTS}
        res[clock] = {
            "median_s": med,
            "all_s": secs,
            "ratio_to_bare": {v: to_bare[v][0] for v in VARIANTS},
            "ratio_to_bare_quartiles": {v: to_bare[v][1:] for v in VARIANTS},
            "ratio_to_tensorboard": {v: paired_ratio(secs[v], secs["tensorboard"])[0] for v in VARIANTS},
            "ratio": "median over rounds of each round's ratio (paired)",
        }
    print(f"workload: {res['workload']}, {args.epochs} epochs, {args.reps} rounds, load {res['loadavg_1m_start_end']}")
    for v in VARIANTS:
        print(f"{VARIANTS[v]:<34} wall {res['wall']['median_s'][v]:.2f} s ({res['wall']['ratio_to_bare'][v]:.3f}x)  "
              f"cpu {res['cpu']['median_s'][v]:.2f} s ({res['cpu']['ratio_to_bare'][v]:.3f}x bare, {res['cpu']['ratio_to_tensorboard'][v]:.3f}x TB)")
    print(f"run-store write rate {res['store_write_rows_per_s']:,.0f} rows per CPU second (median of 3)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
        if Path(args.json).resolve().parent == DOCS:
            doctables.write_block("docs/benchmarks.md", "overhead")


VARIANTS = {
    "bare": "bare loop",
    "tensorboard": "bare + same scalars via TensorBoard",
    "light": "engine, default logging",
    "full": "engine, full diagnostics",
}
DOCS = ROOT / "docs"


@doctables.renderer("overhead")
def render() -> str:
    rows = []
    for name in ("overhead_default.json", "overhead_heavy.json"):
        f = DOCS / name
        if not f.is_file():
            continue
        r = json.loads(f.read_text())
        if "cpu" not in r:
            continue
        c, w = r["cpu"], r["wall"]
        la = r["loadavg_1m_start_end"]
        q = c.get("ratio_to_bare_quartiles", {})

        def ratio(v: str) -> str:
            return f"**{c['ratio_to_bare'][v]:.2f}×**" + (f" [{q[v][0]:.2f}–{q[v][1]:.2f}]" if v in q else "")

        rows.append([
            f"{r['workload']} ({r['epochs']} epochs × {r['steps_per_epoch']} steps, {r['reps']} rounds, load {la[0]:.1f}→{la[1]:.1f})",
            f"{c['median_s']['bare']:.2f} s",
            ratio("tensorboard"),
            ratio("light"),
            ratio("full"),
            f"{c['ratio_to_tensorboard']['light']:.2f}×",
            f"{w['ratio_to_bare']['tensorboard']:.2f}× / {w['ratio_to_bare']['light']:.2f}× / {w['ratio_to_bare']['full']:.2f}×",
            f"{r['store_write_rows_per_s']:,.0f}",
        ])
    head = ["workload", "bare loop (CPU)", "TensorBoard anchor", "engine, default logging", "engine, full diagnostics",
            "default logging / TensorBoard", "wall-clock ratios (TB / default / full)", "store rows per CPU s"]
    return doctables.table(head, rows) + (
        "\nRatios: the median over rounds of each round's ratio to the bare loop (CPU time), with the quartiles "
        "of those per-round ratios in square brackets.\n")


if __name__ == "__main__":
    main()
