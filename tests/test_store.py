import json
import multiprocessing as mp
import os
import sqlite3
import time

import numpy as np
import pytest

from modalscope.errors import StoreError
from modalscope.store import RunReader, RunWriter, delete_run, list_runs, open_run, resolve_run


def test_write_and_query_all_tables(tmp_path):
    w = RunWriter(tmp_path / "r1", flush_rows=3)
    for s in range(10):
        w.log_scalars(s, s // 5, {"loss/fused": 1.0 / (s + 1), "grad_norm/audio": float(s)})
    w.log_histogram(0, "train", "gap", np.linspace(-1, 1, 5), np.array([1, 2, 3, 4]))
    w.log_gmm(0, "train", "gap", [0.3, 0.7], [0.1, 0.8], [0.01, 0.02], 10.0, 5.0, 0.45, 0)
    w.log_samples(0, "train", "gap", [0, 1], [0.1, 0.9], [0.05, 0.95], [1, 2], [1, 0])
    w.log_contribution(0, "audio", 0.4, 0.8, 0.6, 0.41)
    w.log_event(3, 0, "stage", "adaptive")
    import pandas as pd

    w.log_table("robust", pd.DataFrame({"m": ["audio"], "acc": [0.5]}))
    w.close("finished")
    r = open_run(tmp_path / "r1")
    assert r.status() == "finished"
    df = r.scalars("loss/fused")
    assert list(df["step"]) == list(range(10))
    assert r.scalars(prefix="grad_norm/")["name"].unique().tolist() == ["grad_norm/audio"]
    h = r.histograms()
    assert h["counts"].iloc[0].tolist() == [1, 2, 3, 4]
    g = r.gmm()
    assert g["means"].iloc[0] == [0.1, 0.8] and g["balanced"].iloc[0] == 0
    assert r.samples(epoch=0)["posterior"].tolist() == [0.05, 0.95]
    assert r.contributions()["captum"].iloc[0] == pytest.approx(0.41)
    assert r.events()["kind"].tolist() == ["stage"]
    assert r.table("robust")["acc"].iloc[0] == 0.5
    assert r.final_scalars("loss/")["loss/fused"] == pytest.approx(0.1)
    assert not (tmp_path / "r1" / "metrics.sqlite-wal").exists()


def _slow_writer(path, n, delay):
    w = RunWriter(path, flush_rows=1, flush_seconds=0.01)
    for i in range(n):
        w.log_scalar(i, 0, "x", float(i))
        time.sleep(delay)
    w.close("finished")


def test_reader_process_sees_rows_while_writer_process_writes(tmp_path):
    path = tmp_path / "live"
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_slow_writer, args=(path, 40, 0.05))
    p.start()
    seen = []
    deadline = time.time() + 30
    while time.time() < deadline and p.is_alive():
        if (path / "metrics.sqlite").exists():
            try:
                seen.append(len(RunReader(path).scalars("x")))
            except StoreError:
                pass
        time.sleep(0.1)
    p.join(30)
    assert p.exitcode == 0
    live = [n for n in seen if 0 < n < 40]
    assert live, f"reader never saw a partial run: {seen}"
    assert sorted(live) == live
    assert len(RunReader(path).scalars("x")) == 40


def test_stale_heartbeat_reads_interrupted(tmp_path):
    w = RunWriter(tmp_path / "r", heartbeat_seconds=3600)
    w.log_scalar(0, 0, "x", 1.0)
    w.flush()
    w.set("heartbeat", time.time() - 1000)
    r = open_run(tmp_path / "r")
    assert r.status() == "interrupted"
    w.heartbeat()
    assert r.status() == "running"
    w.close("finished")


def test_dead_pid_reads_interrupted(tmp_path):
    w = RunWriter(tmp_path / "r", heartbeat_seconds=3600)
    w.set("pid", 2**22 + 12345)
    assert open_run(tmp_path / "r").status() == "interrupted"
    w.close("finished")


def test_newer_schema_refused(tmp_path):
    w = RunWriter(tmp_path / "r")
    w.close("finished")
    con = sqlite3.connect(tmp_path / "r" / "metrics.sqlite")
    con.execute("UPDATE run SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer than this ModalScope"):
        open_run(tmp_path / "r")


def test_corrupt_store_gives_one_line(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "metrics.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot read"):
        open_run(d)
    df = list_runs(tmp_path)
    assert df["status"].tolist() == ["unreadable"]


def test_delete_only_inside_root(tmp_path):
    root = tmp_path / "runs"
    RunWriter(root / "a").close("finished")
    other = tmp_path / "elsewhere"
    RunWriter(other / "b").close("finished")
    with pytest.raises(StoreError, match="refusing to delete"):
        delete_run(other / "b", root)
    with pytest.raises(StoreError, match="refusing to delete"):
        delete_run(root / "a" / ".." / ".." / "elsewhere" / "b", root)
    delete_run(root / "a", root)
    assert not (root / "a").exists() and (other / "b").exists()


def test_resolve_run_by_name_and_path(tmp_path):
    RunWriter(tmp_path / "runs" / "x").close("finished")
    assert resolve_run("x", tmp_path / "runs") == tmp_path / "runs" / "x"
    assert resolve_run(str(tmp_path / "runs" / "x")) == tmp_path / "runs" / "x"
    with pytest.raises(StoreError, match="no run 'y'"):
        resolve_run("y", tmp_path / "runs")
