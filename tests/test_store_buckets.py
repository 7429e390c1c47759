"""The ``scalar_buckets`` summary and the cheaper reads built on it give what the exact rows give."""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest

from modalscope.dashboard import figures as F
from modalscope.store import BUCKET_WIDTHS, RunReader, RunWriter, bucket_points, rebuild_buckets, run_brief, run_finals


def _exact(rd: RunReader, width: int) -> pd.DataFrame:
    """The summary computed the slow way from every row: first/last by step (arrival on ties),
    min/max skipping NaN (earliest step on ties), count and sum of the non-NaN values."""
    raw = rd.scalars().sort_values("id")
    out = []
    for (name, b), g in raw.assign(bucket=raw["step"] // width).groupby(["name", "bucket"]):
        g = g.sort_values(["step", "id"], kind="stable")
        v = g["value"].to_numpy(dtype=float)
        fin = g[~np.isnan(v)]
        lo = fin.sort_values(["value", "step", "id"]).iloc[0] if len(fin) else None
        hi = fin.sort_values(["value", "step", "id"], ascending=[False, True, True]).iloc[0] if len(fin) else None
        out.append({"name": name, "bucket": b, "n": len(fin), "total": float(fin["value"].sum()),
                    "first_step": g["step"].iloc[0], "first_value": v[0], "last_step": g["step"].iloc[-1], "last_value": v[-1],
                    "min_step": np.nan if lo is None else lo["step"], "min_value": np.nan if lo is None else lo["value"],
                    "max_step": np.nan if hi is None else hi["step"], "max_value": np.nan if hi is None else hi["value"]})
    return pd.DataFrame(out)


def _check(rd: RunReader) -> None:
    for w in BUCKET_WIDTHS:
        got = rd.scalar_buckets(w).sort_values(["name", "bucket"]).reset_index(drop=True)
        want = _exact(rd, w).sort_values(["name", "bucket"]).reset_index(drop=True)
        assert len(got) == len(want) and got["name"].tolist() == want["name"].tolist()
        for c in ("bucket", "n", "first_step", "last_step", "min_step", "max_step"):
            np.testing.assert_array_equal(got[c].to_numpy(dtype=float), want[c].to_numpy(dtype=float), err_msg=f"width {w}: {c}")
        for c in ("total", "first_value", "last_value", "min_value", "max_value"):
            np.testing.assert_allclose(got[c].to_numpy(dtype=float), want[c].to_numpy(dtype=float), rtol=1e-12, err_msg=f"width {w}: {c}")


def _write(d, rng, steps=3000, flush_rows=37):
    """Two step series (one with NaN, ties and a spike), one every 5 steps, one per epoch,
    flushed in small uneven pieces so buckets are split across flushes."""
    w = RunWriter(d, flush_rows=flush_rows, flush_seconds=1e9, heartbeat_seconds=3600)
    for s in range(steps):
        vals = {"loss/total": float(np.round(rng.normal(), 1)), "grad_norm/audio": float(rng.random())}
        if s % 97 == 0:
            vals["grad_norm/audio"] = float("nan")
        if s == 1234:
            vals["loss/total"] = 50.0
        if s % 5 == 0:
            vals["conflict/cos/audio"] = float(rng.uniform(-1, 1))
        w.log_scalars(s, s // 500, vals)
        if s % 500 == 499:
            w.log_scalar(s, s // 500, "acc/test/fused", s / steps)
    return w


def test_summary_equals_the_exact_aggregation_however_rows_were_flushed(tmp_path):
    w = _write(tmp_path / "r", np.random.default_rng(0))
    w.log_scalars(70, 0, {"loss/total": -9.0})  # a late row for a bucket already written: merged, not duplicated
    w.log_scalars(3100, 6, {"grad_norm/audio": float("nan")})  # a bucket of NaN only: no minimum or maximum
    w.close("finished")
    rd = RunReader(tmp_path / "r")
    assert rd.bucket_widths() == BUCKET_WIDTHS
    _check(rd)
    nan_only = rd.scalar_buckets(64, names=["grad_norm/audio"]).iloc[-1]
    assert nan_only["n"] == 0 and np.isnan(nan_only["min_step"]) and np.isnan(nan_only["max_value"])


def test_summary_follows_truncation_and_is_built_for_files_written_before_it(tmp_path):
    d = tmp_path / "r"
    w = _write(d, np.random.default_rng(1))
    w.close("interrupted")
    w = RunWriter(d, resume=True)
    w.truncate_after(1500, 2)  # as --resume does; then training logs the steps again with other values
    for s in range(1501, 1800):
        w.log_scalars(s, 3, {"loss/total": 100.0 + s})
    w.close("finished")
    rd = RunReader(d)
    assert rd.scalars(names=["loss/total"])["value"].max() == 1799 + 100.0
    _check(rd)
    con = sqlite3.connect(d / "metrics.sqlite")  # a file from before the summary: no table, no run key
    con.execute("DROP TABLE scalar_buckets")
    con.execute("DELETE FROM run WHERE key = 'scalar_buckets'")
    con.commit()
    con.close()
    assert RunReader(d).bucket_widths() == ()
    with pytest.raises(Exception, match="no scalar_buckets of width 64"):
        RunReader(d).scalar_buckets(64)
    RunWriter(d, resume=True).close("finished")  # a writer opening it builds the summary once
    _check(RunReader(d))
    con = sqlite3.connect(d / "metrics.sqlite")
    con.execute("DELETE FROM scalars WHERE step % 3 != 0")  # gallery thinning deletes rows, then rebuilds
    rebuild_buckets(con)
    con.close()
    _check(RunReader(d))


def test_drawn_points_are_real_rows_with_every_extreme_and_the_exact_bucket_means(tmp_path):
    w = _write(tmp_path / "r", np.random.default_rng(2), steps=5000)
    w.close("finished")
    rd = RunReader(tmp_path / "r")
    raw = rd.scalars(prefix="loss/")
    pts = bucket_points(rd.scalar_buckets(64, prefix="loss/"))
    assert len(pts) <= 4 * -(-5000 // 64) and pts["step"].is_monotonic_increasing
    real = set(zip(raw["step"], raw["value"]))
    assert all((s, v) in real for s, v in zip(pts["step"], pts["value"]))  # no invented point
    assert pts["value"].max() == raw["value"].max() == 50.0 and pts["value"].min() == raw["value"].min()
    assert pts["step"].iloc[0] == 0 and pts["step"].iloc[-1] == 4999
    x, mean, n = F.bucket_means(pts)
    exact = raw.assign(b=raw["step"] // 64).groupby("b")["value"].agg(["mean", "count"])
    np.testing.assert_allclose(mean, exact["mean"].to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(n, exact["count"].to_numpy())
    np.testing.assert_allclose(x, raw.groupby(raw["step"] // 64)["step"].agg(lambda s: (s.min() + s.max()) / 2).to_numpy())
    fig = F.scalar_lines(pts, "loss", "nats", smoothing=0.5, prefix="loss/")  # smoothed line: EMA over the exact bucket means
    smooth = next(t for t in fig.data if t.name == "total")
    np.testing.assert_allclose(np.asarray(smooth.y), F.ema(exact["mean"].to_numpy(), 0.5), rtol=1e-12)


def test_flagged_share_from_buckets_equals_the_share_of_flagged_rows(tmp_path):
    w = RunWriter(tmp_path / "r", flush_rows=500, flush_seconds=1e9, heartbeat_seconds=3600)
    for s in range(6400):  # flagged on the first 1/4 of the run, never after
        w.log_scalars(s, 0, {"grad_ratio": 3.0 if s < 1600 else 1.2, "conflict/flag": float(s < 1600)})
    w.close("finished")
    rd = RunReader(tmp_path / "r")
    pts = bucket_points(rd.scalar_buckets(64))
    bars = next(t for t in F.conflict_figure(pts).data if t.type == "bar")
    x, y = np.asarray(bars.x), np.asarray(bars.y)
    assert set(np.round(y, 12)) == {0.0, 1.0}  # 1600 = 25 whole buckets: every bar is all or nothing
    assert x[y == 1].max() < 1600 < x[y == 0].min()


def test_run_finals_is_the_last_row_of_every_name_and_forgets_a_reopened_run(tmp_path):
    w = _write(tmp_path / "r", np.random.default_rng(3), steps=600)
    w.close("finished")
    rd = RunReader(tmp_path / "r")
    meta, finals = run_finals(tmp_path / "r")
    assert meta["status"] == "finished"
    assert {k: v for k, (v, _) in finals.items() if v == v} == {k: v for k, v in rd.final_scalars("").items() if v is not None and v == v}
    assert finals["acc/test/fused"] == (499 / 600, 0)
    assert set(run_finals(tmp_path / "r", ("acc/",))[1]) == {"acc/test/fused"}
    assert rd.has_scalars("loss/") and rd.has_scalars("acc/test/") and not rd.has_scalars("probe")
    brief = run_brief(tmp_path / "r", ("acc/",))
    assert brief["last_id"] == rd.last_id() > 0 and brief["names"] == rd.scalar_names() == sorted(
        ["acc/test/fused", "conflict/cos/audio", "grad_norm/audio", "loss/total"])
    time.sleep(0.01)
    w = RunWriter(tmp_path / "r", resume=True)
    w.log_scalar(700, 1, "acc/test/fused", 0.99)
    w.flush()
    assert run_finals(tmp_path / "r")[1]["acc/test/fused"] == (0.99, 1)  # read while running (WAL): never from memory
    w.close("finished")
    assert run_finals(tmp_path / "r", ("acc/",))[1]["acc/test/fused"] == (0.99, 1)
    assert run_brief(tmp_path / "r", ("acc/",))["last_id"] == RunReader(tmp_path / "r").last_id() > brief["last_id"]
    assert json.loads(sqlite3.connect(tmp_path / "r" / "metrics.sqlite").execute(
        "SELECT value FROM run WHERE key = 'scalar_buckets'").fetchone()[0]) == list(BUCKET_WIDTHS)
