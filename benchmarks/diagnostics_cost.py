"""What the diagnostics cost: engine with full diagnostics vs a bare PyTorch loop, and GMM fit time.

Three trainers see the same model, data, optimiser and batch order, alternated in one
process so machine load hits them alike:

* ``bare``   — a hand-written loop: forward, fused CE, backward, SGD step (no eval, no store);
* ``engine`` — the ModalScope engine with every diagnostic off (per-epoch evaluation and
  the store still run);
* ``full``   — the engine at the default diagnostics cadence (gradient stats every step,
  conflict cosines every 10 steps, gap + GMM + samples on train and test, contributions
  with captum every epoch).

Reported: median seconds per run and the ratios ``full / bare`` (target ≤ 1.25) and
``engine / bare``; then the median time of :func:`core.diagnostics.gmm.fit_gap_mixture`
on 100 000 gaps.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/diagnostics_cost.py [--epochs 3] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import resolve_config  # noqa: E402
from core.data import BatchLoader  # noqa: E402
from core.engine import Trainer, build_bundle, seed_everything  # noqa: E402
from core.models import build_model  # noqa: E402

OFF = {"grad": False, "conflict": False, "gap": False, "contrib": False, "captum": False}


def make_cfg(root: Path, name: str, epochs: int, diagnostics: dict | None, device: str):
    base = {"runs_dir": str(root), "name": name, "epochs": epochs, "device": device,
            "log": {"progress": False, "checkpoint": False}}
    if diagnostics is not None:
        base["diagnostics"] = diagnostics
    return resolve_config(base=base)


def bare_loop(cfg, bundle) -> float:
    seed_everything(cfg.seed)
    dev = torch.device("cuda" if cfg.device == "cuda" else "cpu")
    model = build_model(cfg, bundle).to(dev)
    o = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        loader = BatchLoader(bundle.splits["train"], cfg.batch_size, shuffle=True, seed=cfg.seed)
        loader.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(dev) for k, v in batch.items()}
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(batch).fused, batch["label"])
            loss.backward()
            opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def engine_run(cfg, bundle) -> float:
    t = Trainer(cfg, bundle=bundle)
    t0 = time.perf_counter()
    t.fit()
    if t.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def gmm_time(n: int = 100_000, repeats: int = 5) -> float:
    from core.diagnostics.gmm import fit_gap_mixture

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.0, 0.1, int(n * 0.7)), rng.normal(0.6, 0.15, n - int(n * 0.7))])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit_gap_mixture(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="modalscope-bench-"))
    bundle = build_bundle(make_cfg(root, "probe", 1, None, args.device))
    res: dict[str, list[float]] = {"bare": [], "engine": [], "full": []}
    engine_run(make_cfg(root, "warmup", 1, None, args.device), bundle)
    for r in range(args.repeats):
        res["bare"].append(bare_loop(make_cfg(root, f"bare{r}", args.epochs, OFF, args.device), bundle))
        res["engine"].append(engine_run(make_cfg(root, f"engine{r}", args.epochs, OFF, args.device), bundle))
        res["full"].append(engine_run(make_cfg(root, f"full{r}", args.epochs, None, args.device), bundle))
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {
        "epochs": args.epochs, "repeats": args.repeats, "device": args.device,
        "bare_s": med["bare"], "engine_s": med["engine"], "full_s": med["full"],
        "engine_over_bare": med["engine"] / med["bare"], "full_over_bare": med["full"] / med["bare"],
        "full_over_engine": med["full"] / med["engine"],
        "gmm_fit_100k_s": gmm_time(),
    }
    print(f"{'row':<28}{'seconds':>10}{'ratio vs bare':>16}")
    print(f"{'bare PyTorch loop':<28}{med['bare']:>10.3f}{1.0:>16.3f}")
    print(f"{'engine, diagnostics off':<28}{med['engine']:>10.3f}{out['engine_over_bare']:>16.3f}")
    print(f"{'full diagnostics':<28}{med['full']:>10.3f}{out['full_over_bare']:>16.3f}")
    print(f"GMM fit (1 + 2 components), 100 000 gaps: {out['gmm_fit_100k_s']:.3f} s")
    return out


if __name__ == "__main__":
    main()
