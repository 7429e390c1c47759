"""Every shortcut taken for speed gives what the exact path gives (on small planted cases)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from modalscope.store import RunReader, RunWriter, list_runs, run_summary
from tests.planted import plant_run

# The definitions the fast queries replace: last value = the row with the largest id per name
# (grouping the whole table), epochs done from MAX(epoch) of acc/test/fused.
OLD_FINAL = ("SELECT n.name, s.value FROM scalars s JOIN names n ON n.id = s.name_id "
             "WHERE s.id IN (SELECT MAX(id) FROM scalars GROUP BY name_id) AND n.name >= ? AND n.name < ?")


def _exact_summary(rd: RunReader) -> dict:
    finals = rd._query(OLD_FINAL, ["acc/test/", "acc/test/\uffff"])
    e = rd._query("SELECT MAX(s.epoch) AS e FROM scalars s JOIN names n ON n.id = s.name_id WHERE n.name = 'acc/test/fused'")["e"].iloc[0]
    return {"finals": dict(zip(finals["name"], finals["value"])), "epochs_done": int(e) + 1, "status": rd.status()}


def test_fast_summary_equals_the_grouped_queries_after_a_truncation(tmp_path):
    d = plant_run(tmp_path, "a", epochs=5, steps_per_epoch=7, seed=3)
    w = RunWriter(d, resume=True)
    w.truncate_after(20, 2)  # as a resume does: rows after the checkpoint go, then training re-logs them
    w.log_scalars(21, 3, {"acc/test/fused": 0.123, "acc/test/audio": 0.456})
    w.log_scalars(21, 3, {"loss/total": 9.0})
    w.close("finished")
    rd = RunReader(d)
    exact = _exact_summary(rd)
    fast = rd.summary()
    assert {k: v for k, v in fast.items() if k.startswith("acc_")} == {k.replace("acc/test/", "acc_"): v for k, v in exact["finals"].items()}
    assert fast["acc_fused"] == 0.123 and fast["acc_audio"] == 0.456
    assert fast["epochs_done"] == exact["epochs_done"] == 4
    assert fast["status"] == exact["status"] == "finished"
    assert rd.final_scalars("acc/test/") == exact["finals"]
    all_exact = rd._query(OLD_FINAL, ["", "\uffff"])
    assert rd.final_scalars("") == dict(zip(all_exact["name"], all_exact["value"]))


def test_listed_summaries_are_remembered_only_while_the_files_are_unchanged(tmp_path):
    d = plant_run(tmp_path, "b", epochs=2, steps_per_epoch=3)
    first = run_summary(d)
    assert run_summary(d) == first
    time.sleep(0.01)
    w = RunWriter(d, resume=True)
    w.log_scalars(99, 1, {"acc/test/fused": 0.5})
    w.close("failed", "boom")
    again = run_summary(d)
    assert again["acc_fused"] == 0.5 and again["status"] == "failed" and again["error"] == "boom"
    assert list_runs(tmp_path)["acc_fused"].tolist() == [0.5]


def test_running_rows_are_never_served_from_memory(tmp_path):
    d = plant_run(tmp_path, "c", epochs=2, steps_per_epoch=3, status="running")
    w = RunWriter(d, resume=True, heartbeat_seconds=3600)
    assert run_summary(d)["status"] == "running"
    w.set_many({"heartbeat": time.time() - 3600})  # trainer gone silent: the stored files are what changes here
    assert run_summary(d)["status"] == "interrupted"
    w.close("finished")


def test_minmax_lttb_keeps_the_shape_the_extremes_and_only_real_points():
    from modalscope.dashboard import figures as F

    x = np.arange(100_000)
    y = np.sin(x / 5_000.0) + 0.01 * np.random.default_rng(0).standard_normal(len(x))
    y[31_337], y[90_001] = 9.0, -4.0
    xs, ys = F.downsample_minmax(x, y, 2000)
    assert len(xs) <= 2002 and np.all(np.diff(xs) > 0)
    assert np.array_equal(ys, y[xs]), "every point drawn is a real point of the series"
    assert xs[0] == 0 and xs[-1] == 99_999 and ys.max() == 9.0 and ys.min() == -4.0
    smooth = np.abs(np.interp(x, xs, ys) - y)
    smooth[[31_337, 90_001]] = 0.0
    assert np.median(smooth) < 0.02, "the drawn line follows the series (sine of amplitude 1, noise 0.01)"


def test_non_finite_series_fall_back_to_exact_bucket_min_max():
    from modalscope.dashboard import figures as F

    y = np.linspace(0, 1, 10_000)
    y[5_000] = np.nan
    xs, ys = F.downsample_minmax(np.arange(10_000), y, 500)
    xb, yb = F.downsample_minmax_buckets(np.arange(10_000), y, 500)
    assert np.array_equal(xs, xb) and np.array_equal(ys, yb, equal_nan=True)


def test_reused_raw_gradient_stats_equal_the_recomputed_applied_ones(tiny, monkeypatch):
    from modalscope.diagnostics import monitor
    from modalscope.engine import Trainer

    def applied(name, reuse):
        monkeypatch.setattr(monitor, "REUSE_RAW_GRADIENTS", reuse)
        t = Trainer(tiny(epochs=1, name=name, log={"progress": False, "checkpoint": False},
                         diagnostics={"conflict": False, "gap": False, "contrib": False, "probe": False}))
        t.fit()
        df = RunReader(t.run_dir).scalars(prefix="grad_applied")
        return df.sort_values(["name", "step"])[["step", "name", "value"]].reset_index(drop=True)

    fast, exact = applied("fast", True), applied("exact", False)
    assert len(fast) > 0 and fast.equals(exact)


def _pair_exact(runs, on, reference="joint", method_col="method"):
    """The row-by-row filtering that pair_with_reference replaced (reference semantics)."""
    import pandas as pd

    on = [c for c in on if c in runs.columns]
    refs = runs[runs[method_col] == reference]
    out = []
    for _, r in runs.iterrows():
        cand = refs
        for c in on:
            cand = cand[cand[c].astype(str) == str(r[c])]
        if cand.empty:
            out.append(np.nan)
            continue
        if "source" in cand and (cand["source"] == r.get("source")).any():
            cand = cand[cand["source"] == r.get("source")]
        out.append(cand["key"].iloc[0])
    return pd.Series(out, index=runs.index, name="ref")


@pytest.mark.parametrize("with_source", [True, False])
def test_pairing_by_lookup_equals_row_by_row_filtering(with_source):
    import pandas as pd

    from modalscope.dashboard.comparison import pair_with_reference

    rng = np.random.default_rng(1)
    n = 300
    runs = pd.DataFrame({
        "key": [f"k{i}" for i in range(n)],
        "method": rng.choice(["joint", "ogm_ge", "unimodal:audio"], n),
        "preset": rng.choice(["imbalanced", "noisy"], n),
        "seed": rng.integers(0, 6, n),
        "lr": rng.choice([0.01, 0.1, np.nan], n),
    })
    if with_source:
        runs["source"] = rng.choice(["runs", "gallery"], n)
    on = ["preset", "seed", "lr", "not_a_column"]
    fast, exact = pair_with_reference(runs, on), _pair_exact(runs, on)
    assert fast.notna().sum() > 50 and fast.isna().sum() > 0
    pd.testing.assert_series_equal(fast, exact)


def test_remembered_root_scan_equals_a_fresh_scan_and_sees_new_runs(tmp_path):
    import json as _json

    from modalscope import reference

    root = tmp_path / "root"
    plant_run(root, "a", epochs=1, steps_per_epoch=2)
    (root / "b").mkdir()  # a run folder being created: no database, no config yet

    def fresh():
        return [(d.name, _json.loads((d / "config.json").read_text())) for d in sorted(root.iterdir())
                if (d / "metrics.sqlite").is_file() and (d / "config.json").is_file()]

    assert [(d.name, c) for d, c in reference.run_configs(root)] == fresh()
    plant_run(tmp_path / "elsewhere", "b", epochs=1, steps_per_epoch=2, seed=7)
    for f in (tmp_path / "elsewhere" / "b").iterdir():  # completed inside the existing folder: root mtime unchanged
        (root / "b" / f.name).write_bytes(f.read_bytes())
    assert [d.name for d, _ in reference.run_configs(root)] == ["a", "b"]
    assert [(d.name, c) for d, c in reference.run_configs(root)] == fresh()
    plant_run(root, "c", epochs=1, steps_per_epoch=2)
    assert [d.name for d, _ in reference.run_configs(root)] == ["a", "b", "c"]
