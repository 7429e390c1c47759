"""Child-process entry points for the reliability tests (crash and soak).

They live in an importable module so ``multiprocessing`` (spawn) and ``python -m`` can
start them. ``slow-train`` is the real ``modalscope train`` with a fixed pause per step,
so a test can kill it at a chosen point inside an epoch without racing the clock; the
pause changes no arithmetic, so its results equal those of the unslowed CLI.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

SCALAR_NAMES = ("loss/fused", "grad_norm/audio", "grad_norm/visual")


def expected_value(writer: int, step: int, k: int) -> float:
    """The value a synthetic writer logs, so readers can check every row they see."""
    return writer * 1_000_000.0 + step * 10.0 + k


def synthetic_writer(run_dir: str, writer: int, seconds: float, flush_rows: int, flush_seconds: float, result: str) -> None:
    """Log like a trainer (3 scalars per step, a histogram and an event per 50 steps) for ``seconds``."""
    from modalscope.store import RunWriter

    out: dict = {"writer": writer, "error": ""}
    try:
        w = RunWriter(run_dir, flush_rows=flush_rows, flush_seconds=flush_seconds, heartbeat_seconds=0.2)
        step = 0
        deadline = time.monotonic() + seconds
        edges = np.linspace(-1.0, 1.0, 41)
        while time.monotonic() < deadline:
            w.log_scalars(step, step // 50, {n: expected_value(writer, step, k) for k, n in enumerate(SCALAR_NAMES)})
            if step % 50 == 49:
                counts, _ = np.histogram(np.clip(np.random.default_rng(step).normal(0, 0.5, 200), -1, 1), bins=edges)
                w.log_histogram(step // 50, "train", "gap", edges, counts)
                w.log_event(step, step // 50, "epoch", f"epoch {step // 50} done")
            step += 1
            if step % 20 == 0:
                time.sleep(0.002)
        w.close("finished")
        out.update(steps=step, rows=w.rows_written)
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        out["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    Path(result).write_text(json.dumps(out))


def trainer_writer(cfg_json: str, seconds: float, result: str) -> None:
    """A real Trainer on a tiny config with endless epochs, stopped by SIGTERM after ``seconds``."""
    import signal
    import threading

    from modalscope.config import build_config
    from modalscope.engine import StopRequested, Trainer

    out: dict = {"error": ""}
    timer = None
    try:
        cfg = build_config(json.loads(cfg_json))
        t = Trainer(cfg)
        timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            t.fit()
            out["status"] = "finished"
        except StopRequested:
            out["status"] = "interrupted"
        out.update(rows=t.writer.rows_written, steps=t.global_step, run_dir=str(t.run_dir))
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    finally:
        if timer is not None:
            timer.cancel()
    Path(result).write_text(json.dumps(out))


def reader(root: str, stop_file: str, result: str, synthetic_runs: list[str]) -> None:
    """Poll a runs root through the store API until ``stop_file`` appears; record every error.

    Like a live dashboard page it reads scalars incrementally (``since_id``). Each poll
    checks what it sees of the synthetic runs: the new rows continue the previous ones
    with no gap (ids and steps) and carry the exact values written. After the stop, one
    last pass counts every table of every run.
    """
    from modalscope.store import RunReader, list_runs

    polls, errors, prefix_checks = 0, [], 0
    last_id: dict[str, int] = {}
    seen: dict[str, int] = {}
    k_names = len(SCALAR_NAMES)

    def check_continuation(name: str, df, before: int) -> None:
        nonlocal prefix_checks
        writer = int(name.rsplit("-", 1)[1])
        n = len(df)
        if n % k_names or before % k_names:
            raise AssertionError(f"{name}: {before}+{n} rows is not a whole number of steps (torn transaction)")
        ids = df["id"].to_numpy()
        if not np.array_equal(ids, np.arange(before + 1, before + n + 1)):
            raise AssertionError(f"{name}: row ids have a gap after id {before}")
        steps = np.repeat(np.arange(before // k_names, (before + n) // k_names), k_names)
        if not np.array_equal(df["step"].to_numpy(), steps):
            raise AssertionError(f"{name}: steps do not continue from step {before // k_names}")
        k = np.tile(np.arange(k_names), n // k_names)
        if not np.array_equal(df["value"].to_numpy(), writer * 1_000_000.0 + steps * 10.0 + k):
            raise AssertionError(f"{name}: values differ from what was written")
        prefix_checks += 1

    def poll() -> None:
        df = list_runs(root)
        if not df.empty and (df["status"] == "unreadable").any():
            bad = df[df["status"] == "unreadable"]
            raise AssertionError(f"list_runs reported unreadable: {bad['error'].tolist()}")
        for d in sorted(Path(root).iterdir()):
            if not (d / "metrics.sqlite").exists():
                continue
            r = RunReader(d)
            r.status()
            new = r.scalars(since_id=last_id.get(d.name, 0))
            before = seen.get(d.name, 0)
            if d.name in synthetic_runs:
                check_continuation(d.name, new, before)
                r.histograms()
            if len(new):
                last_id[d.name] = int(new["id"].iloc[-1])
                seen[d.name] = before + len(new)

    while not os.path.exists(stop_file):
        polls += 1
        try:
            poll()
        except Exception as e:  # noqa: BLE001 - every error is a failure the test reports
            errors.append(f"{type(e).__name__}: {e}")
        time.sleep(0.05)
    final: dict[str, dict] = {}
    try:
        poll()
        for d in sorted(Path(root).iterdir()):
            r = RunReader(d)
            final[d.name] = {"counts": r.counts(), "status": r.status(), "scalars_seen_incrementally": seen.get(d.name, 0)}
    except Exception as e:  # noqa: BLE001
        errors.append(f"final read: {type(e).__name__}: {e}")
    Path(result).write_text(json.dumps({"polls": polls, "errors": errors, "prefix_checks": prefix_checks, "final": final}))


def slow_train(delay: float, argv: list[str]) -> int:
    """``modalscope train ARGV`` with ``delay`` seconds added before every training step."""
    from modalscope import engine
    from modalscope.cli import main

    orig = engine.Trainer._train_step

    def slow(self, batch, epoch):
        time.sleep(delay)
        return orig(self, batch, epoch)

    engine.Trainer._train_step = slow
    return main(["train", *argv])


if __name__ == "__main__":
    if sys.argv[1] == "slow-train":
        raise SystemExit(slow_train(float(sys.argv[2]), sys.argv[3:]))
    raise SystemExit(f"unknown worker {sys.argv[1]!r}")
