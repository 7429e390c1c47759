"""The Learn page's *Try it* run: how long it takes and whether it shows the lesson.

Trains exactly what *Try it* launches (``modalscope.dashboard.learn_steps.try_config("joint")``: the gallery's
``joint`` run on the default preset, seed 0), after the two ``unimodal`` references of the same
config in the same root (so the run logs its encoders' utilisation, as it does next to the
gallery). Records the joint run's wall time, its CPU time (the wall time on an idle core) and
the 1-minute load average when it started, and what it ended with: fused test accuracy against
audio trained alone, and the visual encoder's probe and utilisation. The Learn page reads the
JSON (``benchmarks/results/learn_try.json``) and states the duration from it.

Usage: ``OMP_NUM_THREADS=1 python -m benchmarks.learn_try [--json benchmarks/results/learn_try.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modalscope.dashboard.learn_steps import TRY_RESULT, try_config  # noqa: E402


def _train(raw: dict, root: Path, name: str) -> tuple[float, float, dict[str, float]]:
    import torch

    from modalscope.config import build_config
    from modalscope.engine import train
    from modalscope.store import open_run

    torch.set_num_threads(1)
    cfg = build_config({**raw, "runs_dir": str(root), "name": name, "seed": 0})
    t0, c0 = time.perf_counter(), time.process_time()
    run_dir, _ = train(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, open_run(run_dir).final_scalars()


def measure() -> dict:
    raw = try_config("joint")
    with tempfile.TemporaryDirectory(prefix="modalscope-learn-try-") as tmp:
        root = Path(tmp)
        alone = {}
        for m in ("audio", "visual"):
            _, _, fin = _train({**raw, "method": {"name": "unimodal", "modality": m}}, root, f"unimodal-{m}")
            alone[m] = fin
        load = os.getloadavg()[0]
        wall, cpu, fin = _train(raw, root, "joint")
    ended = {"fused": fin.get("acc/test/fused"), "audio alone": alone["audio"].get("acc/test/fused"),
             "visual probe": fin.get("probe/test/visual"), "visual probe alone": alone["visual"].get("probe/test/visual"),
             "visual utilisation": fin.get("probe_util/visual")}
    return {"config": raw, "wall_s": wall, "cpu_s": cpu, "load_1min": load, "threads": 1, "machine": f"{platform.machine()} CPU, 1 thread ({os.cpu_count()} cores present)",
            "ended": {k: float(v) for k, v in ended.items() if v is not None}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(TRY_RESULT))
    args = ap.parse_args(argv)
    out = measure()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
