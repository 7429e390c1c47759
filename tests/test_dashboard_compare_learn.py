"""Compare and Learn answer a comparer's and a teacher's questions (AppTest on a planted study, known values)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.planted import plant_run
from tests.planted_study import OGM_DELTA, plant_study

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return plant_study(tmp_path_factory.mktemp("study"))


@pytest.fixture
def app(study, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("MODALSCOPE_RUNS_DIR", str(runs))
    monkeypatch.setenv("MODALSCOPE_SAMPLE_RUNS", str(study))

    def make(page: str, **state):
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        for k, v in state.items():
            at.session_state[k] = v
        at.switch_page(f"views/{page}.py")
        at.run()
        _ok(at)
        return at

    make.runs = runs
    return make


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def _frame(at: AppTest, *cols: str):
    for d in at.dataframe:
        if all(c in d.value.columns for c in cols):
            return d.value
    raise AssertionError(f"no dataframe with {cols}: {[list(d.value.columns) for d in at.dataframe]}")


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _chart(at: AppTest, title_start: str) -> dict:
    for c in _charts(at):
        if c["layout"].get("title", {}).get("text", "").startswith(title_start):
            return c
    raise AssertionError(f"no chart titled {title_start!r}: {[c['layout'].get('title', {}).get('text') for c in _charts(at)]}")


GROUPS = ["joint · imbalanced", "ogm_ge · imbalanced", "mmpareto · imbalanced"]


def test_compare_groups_delta_vs_joint_paired_by_seed_with_interval(app):
    at = app("compare", **{"compare.mode": "groups", "compare.groups": GROUPS})
    t = _frame(at, "group", "rank", "Δ fused vs joint").set_index("group")
    # ogm_ge − joint per seed = (+0.02, +0.03, +0.01): mean 0.02, s 0.01, t_{0.975,2}·0.01/√3 = 0.0248
    assert t.loc["ogm_ge · imbalanced", "Δ fused vs joint"] == "+0.020 [-0.005, +0.045] (3 seeds)"
    assert t.loc["mmpareto · imbalanced", "Δ fused vs joint"] == "-0.050 [-0.050, -0.050] (3 seeds)"
    assert t.loc["joint · imbalanced", "Δ fused vs joint"] == "reference"
    # ranking by best-valid fused (last + 0.01): ogm_ge 0.82, joint 0.80, mmpareto 0.75 (means over seeds)
    assert list(t.index) == ["ogm_ge · imbalanced", "joint · imbalanced", "mmpareto · imbalanced"]
    assert list(t["rank"]) == [1, 2, 3]
    assert t.loc["ogm_ge · imbalanced", "fused (best-valid)"] == "0.820 ± 0.008"
    assert t.loc["joint · imbalanced", "fused (last epoch)"] == "0.790 ± 0.008"
    # weak modality found from the data (visual alone 0.57 < audio alone 0.80) against its trained-alone level
    assert t.loc["joint · imbalanced", "visual utilisation"] == "0.200 ± 0.000"
    assert t.loc["joint · imbalanced", "visual probe alone"] == "0.570"
    assert t.loc["joint · imbalanced", "visual alone"] == "0.570"
    # utilisation Δ: ogm_ge (0.65, 0.70, 0.75) − 0.20 = (0.45, 0.50, 0.55)
    assert t.loc["ogm_ge · imbalanced", "Δ visual utilisation vs joint"].startswith("+0.500 [")
    caption = " ".join(c.value for c in at.caption)
    assert "Weak modality: **visual** (lowest test accuracy when trained alone (audio 0.80, visual 0.57))" in caption
    assert "best-valid epoch" in caption


def test_compare_bars_have_bayes_and_unimodal_reference_lines(app):
    at = app("compare", **{"compare.mode": "groups", "compare.groups": GROUPS})
    bars = _chart(at, "Final test accuracy")
    assert [x for x in bars["data"][0]["x"]] == ["ogm_ge · imbalanced", "joint · imbalanced", "mmpareto · imbalanced"]
    lines = {a["text"]: a["y"] for a in bars["layout"]["annotations"]}
    assert lines["Bayes ceiling (fused) 0.93"] == pytest.approx(0.93)
    assert lines["visual alone 0.57"] == pytest.approx(0.57) and lines["audio alone 0.80"] == pytest.approx(0.80)
    assert sorted(round(s["y0"], 3) for s in bars["layout"]["shapes"]) == [0.57, 0.8, 0.93]


def test_compare_runs_mode_labels_rows_by_run_name(app):
    at = app("compare", **{"compare.selected": ["gallery/ogm_ge_imbalanced_s1", "gallery/joint_imbalanced_s1"]})
    assert at.radio(key="compare.mode").value == "runs"
    t = _frame(at, "run", "rank").set_index("run")
    assert list(t.index) == ["ogm_ge_imbalanced_s1", "joint_imbalanced_s1"]
    assert t.loc["ogm_ge_imbalanced_s1", "Δ fused vs joint"] == f"+{OGM_DELTA[1]:.3f} (1 seed)"
    bars = _chart(at, "Final test accuracy")
    assert list(bars["data"][0]["x"]) == ["ogm_ge_imbalanced_s1", "joint_imbalanced_s1"]
    hist_titles = [c["layout"]["title"]["text"] for c in _charts(at) if c["data"] and c["data"][0]["type"] == "bar" and c["data"][0]["name"] == "samples"]
    assert sorted(hist_titles) == ["joint_imbalanced_s1 · epoch 4", "ogm_ge_imbalanced_s1 · epoch 4"]


def test_compare_gap_histograms_follow_the_grouping(app):
    at = app("compare", **{"compare.mode": "groups", "compare.groups": ["joint · imbalanced", "ogm_ge · imbalanced"]})
    hists = [c for c in _charts(at) if c["data"] and c["data"][0].get("name") == "samples"]
    titles = [c["layout"]["title"]["text"] for c in hists]
    assert titles == ["ogm_ge · imbalanced · epoch 4 · 3 runs", "joint · imbalanced · epoch 4 · 3 runs"]
    # pooled: three runs of 1000 samples each (the planted histograms), no per-run GMM overlay
    assert _arr(hists[0]["data"][0]["y"]).sum() == pytest.approx(3 * sum(_single_counts()), rel=1e-9)
    assert [t["name"] for t in hists[0]["data"]] == ["samples"]


def _arr(v):
    """A plotly JSON array (a list, or ``{"dtype", "bdata"}`` base64) as numpy."""
    import base64

    import numpy as np

    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v, dtype=float)


def _single_counts():
    import numpy as np

    from tests.planted import GMM, gmm_counts

    return gmm_counts(np.linspace(-1, 1, 41), 1000, GMM)
