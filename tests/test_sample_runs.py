"""The shipped gallery: every run opens, is finished, and the README table matches the store."""

import re
from pathlib import Path

import pytest

from modalscope.gallery import folder_size, plan, readme_table
from modalscope.store import list_runs, open_run

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "sample_runs"
RUNS = sorted(p for p in GALLERY.iterdir() if (p / "metrics.sqlite").is_file()) if GALLERY.is_dir() else []


def test_gallery_is_complete_and_small():
    names = {p.name for p in RUNS}
    expected = {r.name for r in plan()}
    assert expected <= names, f"missing sample runs: {sorted(expected - names)}"
    # 56 runs on presets with 1000 valid + 4000 test samples (a seed's accuracy to ±0.8 points):
    # about 0.1 MB for a thinned seed-1/2 run, 0.6-1 MB for a seed-0 run with its per-sample snapshot.
    assert folder_size(GALLERY) < 30e6


@pytest.mark.parametrize("run_dir", RUNS, ids=[p.name for p in RUNS])
def test_every_sample_run_opens_finished(run_dir):
    """Properties any correct gallery has, whatever its presets: a finished run of the configured
    length whose final accuracy is what its own per-epoch rows and per-sample predictions say."""
    r = open_run(run_dir)
    cfg = r.config()
    assert r.status() == "finished"
    assert r.meta()["thinned"]
    assert cfg["method"]["name"]
    acc = r.scalars("acc/test/fused")
    assert sorted(acc["epoch"]) == list(range(cfg["epochs"])), "one test accuracy per configured epoch"
    final = r.final_scalars("acc/test/")["acc/test/fused"]
    assert final == acc.loc[acc["epoch"].idxmax(), "value"]
    n_test = cfg["data"].get("n_test")
    if n_test:
        assert final * n_test == pytest.approx(round(final * n_test), abs=1e-6), "an accuracy is a count over the test split"
    robust = r.final_scalars("robust/clean")
    if robust:
        assert robust["robust/clean"] == pytest.approx(final, abs=1e-9), "the robustness table's clean row is the test accuracy"
    s = r.samples(epoch=cfg["epochs"] - 1, split="test")
    if len(s):
        one = s[s["name"] == s["name"].iloc[0]]
        if n_test and len(one) == n_test:
            assert one["correct"].mean() == pytest.approx(final, abs=1e-9), "stored per-sample predictions give the final accuracy"


def test_readme_table_matches_stored_metrics():
    text = (GALLERY / "README.md").read_text()
    assert text == readme_table(GALLERY)
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| run ")]
    assert len(rows) == len(RUNS)
    df = list_runs(GALLERY).set_index("name")
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name, fused = cells[0], float(cells[4])
        assert fused == pytest.approx(df.loc[name, "acc_fused"], abs=5e-5)
        for mod, val in re.findall(r"(\w+) ([0-9.]+)", cells[5]):
            assert float(val) == pytest.approx(df.loc[name, f"acc_{mod}"], abs=5e-5)


@pytest.mark.slow
def test_regenerating_a_sample_run_reproduces_its_metrics(tmp_path):
    """Same stored config, CPU: final accuracies within 0.01 (bitwise on the machine that made them)."""
    from modalscope.config import build_config
    from modalscope.engine import train

    src = GALLERY / "joint_imbalanced_s0"
    raw = open_run(src).config()
    raw.update({"runs_dir": str(tmp_path), "name": "regen", "device": "cpu"})
    raw["log"]["progress"] = False
    _, final = train(build_config(raw))
    stored = open_run(src).final_scalars("acc/test/")
    for k, v in stored.items():
        assert final[k] == pytest.approx(v, abs=0.01), k


def test_thinning_note_counts_epochs_from_one_like_the_dashboard(tmp_path):
    """The UI numbers epochs 1..E; the note about kept snapshots must too (index 3 = epoch 4)."""
    from modalscope.gallery import thin
    from tests.planted import plant_run

    d = plant_run(tmp_path, "r", epochs=4, steps_per_epoch=2)
    note = thin(d, keep_samples=True, sample_epochs=[0, 3])
    assert "kept only for epoch(s) 1,4 (counted from 1)" in note
    assert open_run(d).meta()["thinned"] == note
