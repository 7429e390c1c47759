"""Concurrency soak: 4 writers and 3 readers on one runs root, every row accounted for.

Writers: two real ``Trainer`` processes (tiny config, endless epochs, stopped by SIGTERM)
and two ``RunWriter`` loops that log like a trainer with the most lock-hungry flush
settings (a transaction per row; one per 0.05 s). Readers: three processes polling
``list_runs``, ``status``, ``scalars`` and ``histograms`` the way dashboard sessions do.

Pass criteria: no reader or writer error (so no ``database is locked`` reaches anyone),
every poll of a synthetic run sees a gap-free prefix with the exact values written, and
after the writers stop, every reader counts exactly the rows each writer committed.

The writing phase lasts ``MODALSCOPE_SOAK_SECONDS`` (default 30; the whole test then
takes about a minute on two cores). The figures are printed and written to
``$MODALSCOPE_SOAK_REPORT`` when set.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from modalscope import store
from modalscope.store import ROW_TABLES, RunReader, RunWriter
from tests import reliability_workers as w
from tests.conftest import tiny_config

pytestmark = pytest.mark.reliability

SOAK_SECONDS = float(os.environ.get("MODALSCOPE_SOAK_SECONDS", "30"))


@pytest.mark.slow
@pytest.mark.timeout(max(300, SOAK_SECONDS + 240))  # a longer soak (MODALSCOPE_SOAK_SECONDS) gets a longer limit
def test_four_writers_three_readers_lose_nothing(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    res = tmp_path / "results"
    res.mkdir()
    stop = tmp_path / "stop"
    ctx = mp.get_context("spawn")
    synthetic = ["synth-0", "synth-1"]

    readers = [ctx.Process(target=w.reader, args=(str(root), str(stop), str(res / f"reader{i}.json"), synthetic)) for i in range(3)]
    writers = [
        ctx.Process(target=w.synthetic_writer, args=(str(root / "synth-0"), 0, SOAK_SECONDS, 1, 60.0, str(res / "synth-0.json"))),
        ctx.Process(target=w.synthetic_writer, args=(str(root / "synth-1"), 1, SOAK_SECONDS, 100_000, 0.05, str(res / "synth-1.json"))),
    ]
    for i, method in enumerate(["joint", "unimodal"]):
        extra = ["method.name=unimodal", "method.modality=audio"] if method == "unimodal" else []
        cfg = tiny_config(tmp_path, name=f"trainer-{i}", epochs=100000, seed=i, log={"progress": False, "flush_seconds": 0.1}, set=extra)
        writers.append(ctx.Process(target=w.trainer_writer, args=(json.dumps(cfg.dump()), SOAK_SECONDS, str(res / f"trainer-{i}.json"))))

    t0 = time.time()
    for p in readers + writers:
        p.start()
    for p in writers:
        p.join(SOAK_SECONDS + 240)
    stop.touch()
    for p in readers:
        p.join(120)
    wall = time.time() - t0
    for p in readers + writers:
        if p.is_alive():
            p.kill()
    assert all(p.exitcode == 0 for p in readers + writers), [p.exitcode for p in readers + writers]

    wres = {f.stem: json.loads(f.read_text()) for f in res.glob("*.json") if not f.stem.startswith("reader")}
    rres = [json.loads((res / f"reader{i}.json").read_text()) for i in range(3)]
    assert set(wres) == {"synth-0", "synth-1", "trainer-0", "trainer-1"}
    for name, r in wres.items():
        assert not r["error"], f"{name}: {r['error']}"
        assert r["rows"] > 0
    written = {name: r["rows"] for name, r in wres.items()}
    for i, r in enumerate(rres):
        assert r["errors"] == [], f"reader {i}: {r['errors'][:5]}"
        assert r["polls"] >= 3 and r["prefix_checks"] >= 2
        for name, rows in written.items():
            counts = r["final"][name]["counts"]
            assert set(counts) == set(ROW_TABLES) - {"sample_arrays"}  # counts() folds sample arrays into "samples"
            assert sum(counts.values()) == rows, f"reader {i} read {sum(counts.values())} rows of {name}, {rows} were written"
            assert r["final"][name]["status"] == ("finished" if name.startswith("synth") else "interrupted")
            assert r["final"][name]["scalars_seen_incrementally"] == counts["scalars"], f"reader {i} missed live rows of {name}"
    for name in ("synth-0", "synth-1"):
        steps = wres[name]["steps"]
        expect = steps * len(w.SCALAR_NAMES) + 2 * (steps // 50)
        assert written[name] == expect, f"{name}: writer counted {written[name]}, its loop logged {expect}"

    figures = {
        "seconds_writing": SOAK_SECONDS,
        "wall_seconds": round(wall, 1),
        "rows_written": sum(written.values()),
        "rows_written_by_run": written,
        "rows_read_back_per_reader": [sum(sum(v["counts"].values()) for v in r["final"].values()) for r in rres],
        "rows_lost": sum(written.values()) * 3 - sum(sum(sum(v["counts"].values()) for v in r["final"].values()) for r in rres),
        "reader_polls": [r["polls"] for r in rres],
        "scalar_rows_seen_live_per_reader": [sum(v["scalars_seen_incrementally"] for v in r["final"].values()) for r in rres],
        "prefix_checks": [r["prefix_checks"] for r in rres],
        "errors": sum(len(r["errors"]) for r in rres),
        "trainer_steps": {n: wres[n]["steps"] for n in ("trainer-0", "trainer-1")},
    }
    print("soak figures:", json.dumps(figures))
    if os.environ.get("MODALSCOPE_SOAK_REPORT"):
        Path(os.environ["MODALSCOPE_SOAK_REPORT"]).write_text(json.dumps(figures, indent=2))
    assert figures["rows_lost"] == 0


def test_a_new_store_is_readable_the_moment_it_appears(tmp_path, monkeypatch):
    """The soak found readers hitting 'no such table: run' on a store being created."""
    seen = []
    real = store._connect

    def spy(path, readonly=False, timeout=30.0):
        if not readonly and not seen:
            r = RunReader(Path(path).parent)
            seen.append((r.status(), r.meta()["schema_version"], r.scalars().empty))
        return real(path, readonly, timeout)

    monkeypatch.setattr(store, "_connect", spy)
    w = RunWriter(tmp_path / "new")
    w.close("finished")
    assert seen == [("running", 1, True)]
    assert not (tmp_path / "new" / "metrics.sqlite.init").exists()


def test_reader_lock_errors_wrapped_by_pandas_are_retried_not_surfaced():
    """pandas wraps a reader's ``database is locked`` in its own DatabaseError; it must still be retried."""
    import pandas as pd

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise pd.errors.DatabaseError("Execution failed on sql 'SELECT 1': database is locked")
        return "rows"

    assert store._retry(flaky, delay=0.001) == "rows" and len(calls) == 3
    with pytest.raises(pd.errors.DatabaseError, match="not a database"):
        store._retry(lambda: (_ for _ in ()).throw(pd.errors.DatabaseError("file is not a database")), delay=0.001)
