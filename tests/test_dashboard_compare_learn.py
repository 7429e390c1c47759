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


def test_compare_across_presets_leaves_out_per_preset_levels(app):
    at = app("compare", **{"compare.mode": "groups", "compare.groups": ["joint · imbalanced", "joint · noisy"]})
    t = _frame(at, "group", "rank").set_index("group")
    assert "visual alone" not in t.columns
    assert not _chart(at, "Final test accuracy")["layout"].get("shapes")
    assert "The rows span several presets" in " ".join(c.value for c in at.caption)


def test_compare_bars_have_bayes_and_unimodal_reference_lines(app):
    at = app("compare", **{"compare.mode": "groups", "compare.groups": GROUPS})
    bars = _chart(at, "Final test accuracy")
    assert [x for x in bars["data"][0]["x"]] == ["ogm_ge · imbalanced", "joint · imbalanced", "mmpareto · imbalanced"]
    lines = {a["text"]: a["y"] for a in bars["layout"]["annotations"]}
    assert lines["Bayes ceiling (fused) 0.93"] == pytest.approx(0.93)
    assert lines["visual alone 0.57"] == pytest.approx(0.57) and lines["audio alone 0.80"] == pytest.approx(0.80)
    assert sorted(round(s["y0"], 3) for s in bars["layout"]["shapes"]) == [0.57, 0.8, 0.93]


def test_compare_runs_mode_labels_rows_by_run_name(app):
    """Rows are runs; each is paired with the joint run of its seed even when that run is not selected."""
    at = app("compare", **{"compare.selected": ["gallery/mmpareto_imbalanced_s2", "gallery/ogm_ge_imbalanced_s1"]})
    assert at.radio(key="compare.mode").value == "runs"
    t = _frame(at, "run", "rank").set_index("run")
    assert list(t.index) == ["ogm_ge_imbalanced_s1", "mmpareto_imbalanced_s2"]
    assert t.loc["ogm_ge_imbalanced_s1", "Δ fused vs joint"] == f"+{OGM_DELTA[1]:.3f} (1 seed)"
    assert t.loc["mmpareto_imbalanced_s2", "Δ fused vs joint"] == "-0.050 (1 seed)"
    assert t.loc["mmpareto_imbalanced_s2", "Δ visual utilisation vs joint"] == "+0.600 (1 seed)"  # 0.70 + 0.10 − 0.20
    bars = _chart(at, "Final test accuracy")
    assert list(bars["data"][0]["x"]) == ["ogm_ge_imbalanced_s1", "mmpareto_imbalanced_s2"]
    hist_titles = [c["layout"]["title"]["text"] for c in _charts(at) if c["data"] and c["data"][0]["type"] == "bar" and c["data"][0]["name"] == "samples"]
    assert hist_titles == ["ogm_ge_imbalanced_s1 · epoch 4", "mmpareto_imbalanced_s2 · epoch 4"]


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


# ---------------------------------------------------------------------------------------------- Learn
def _learn(app, step: str):
    from modalscope.dashboard.learn_steps import STEPS

    at = app("learn")
    at.session_state["learn.step"] = next(s for s in STEPS if s.startswith(step))
    at.run()
    _ok(at)
    return at


def _md(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown)


def test_learn_finds_the_weak_modality_from_the_data(app):
    at = _learn(app, "2 ·")
    caption = " ".join(c.value for c in at.caption)
    assert "Weak modality on the `imbalanced` preset: **visual**" in caption and "audio 0.80, visual 0.57" in caption
    chart = _chart(at, "Unimodal training")
    from modalscope.dashboard.figures import MODALITY_COLORS

    colors = {t["name"].split(" (")[0]: t["line"]["color"] for t in chart["data"] if t.get("mode") == "lines"}
    assert colors == {"audio alone": MODALITY_COLORS["audio"], "visual alone": MODALITY_COLORS["visual"]}
    assert "*visual* is the weak modality here" in _md(at)


def test_learn_step3_names_its_run_and_says_what_is_averaged(app):
    at = _learn(app, "3 ·")
    chart = _chart(at, "Joint training, one run (joint_imbalanced_s0, seed 0)")
    assert {a["text"] for a in chart["layout"]["annotations"]} >= {"audio alone 0.80", "visual alone 0.57"}
    assert "means over the 3 seeds of `joint`" in " ".join(c.value for c in at.caption)
    assert "The fused model ends at **0.79**, about what *audio* reaches alone (0.80)" in _md(at)


def test_learn_probe_step_shows_suppression_and_the_method_that_recovers_it(app):
    at = _learn(app, "4 ·")
    chart = _chart(at, "How much the visual encoder learnt")
    assert list(chart["data"][0]["x"]) == ["joint", "mmpareto", "ogm_ge", "visual alone"]
    lines = {a["text"] for a in chart["layout"]["annotations"]}
    assert lines == {"at initialisation 0.19", "trained alone 0.57"}
    md = _md(at)
    assert "utilisation **0.20**" in md and "**suppression**" in md
    assert "`mmpareto`, brings it to **0.52** (utilisation **0.75**)" in md  # 0.70 + 0.05·seed, mean over 3 seeds


def test_learn_gradient_text_is_computed_from_the_chart_data(app):
    at = _learn(app, "5 ·")
    chart = _chart(at, "Joint training (joint_imbalanced_s0): share of the gradient")
    assert any(a["text"] == "even share 0.50" for a in chart["layout"]["annotations"])
    md = _md(at)
    # planted: visual gets 1 − (0.88 − 0.2 t) of the gradient, about 12-14 % early and never more than half
    import re

    assert re.search(r"\*visual\* gets \*\*1[0-6]%\*\*", md) and "never holds more than half" in md


def test_learn_gap_step_names_its_run_and_draws_the_threshold(app):
    at = _learn(app, "6 ·")
    chart = _chart(at, "joint_noisy_s0: modality gap")
    assert [s["x0"] for s in chart["layout"]["shapes"]] == [pytest.approx(0.2)]  # planted threshold 0.2 at the last epoch
    assert "Run `joint_noisy_s0` (`joint` on `noisy`)" in _md(at) and "**+0.20**" in _md(at)


def test_learn_applies_its_own_test_to_the_gallery_methods(app):
    at = _learn(app, "7 ·")
    v = _frame(at, "method", "passes").set_index("method")
    assert v.loc["ogm_ge", "passes"] == "✓ passes" and v.loc["mmpareto", "passes"] == "✗ fails"
    assert v.loc["mmpareto", "raises visual"] == "yes" and v.loc["mmpareto", "keeps fused"] == "no"
    assert v.loc["ogm_ge", "Δ fused vs joint"] == "+0.020 [-0.005, +0.045] (3 seeds)"
    assert "**Pass the test on `imbalanced`:** `ogm_ge`." in _md(at)
    assert "visual encoder utilisation" in _md(at)
    assert "`" not in _chart(at, "Final test accuracy on imbalanced")["layout"]["title"]["text"]


def test_learn_contrasts_specialisation_on_complementary(app):
    at = _learn(app, "8 ·")
    chart = _chart(at, "The visual head and encoder, inside joint and alone")
    assert sorted(set(chart["data"][0]["x"])) == ["complementary", "imbalanced"]
    bits = _chart(at, "The visual encoder under joint, per bit")
    assert [t["name"] for t in bits["data"]] == ["complementary"]  # only complementary planted per-bit probes
    assert list(bits["data"][0]["x"]) == ["bit 0", "bit 1", "bit 2"] and bits["data"][0]["text"] == ["0.06", "-0.06", "1.00"]
    md = _md(at)
    assert "`imbalanced`: visual head 0.30 inside joint vs 0.57 alone; probe 0.27 vs 0.57, utilisation 0.20 → **suppression**" in md
    assert ("`complementary`: visual head 0.22 inside joint vs 0.43 alone; probe 0.26 vs 0.42, utilisation 0.38; per bit 0: 0.06, 1: -0.06, 2: 1.00 "
            "→ **specialisation**: the encoder keeps bit 2 as well as alone (*audio*'s encoder predicts it at 0.53) and lets the rest go.") in md


def test_learn_contrast_step_says_which_runs_are_missing(tmp_path, monkeypatch):
    root = tmp_path / "g"
    plant_run(root, "joint_imbalanced_s0", "joint", epochs=2, steps_per_epoch=2, probes=False)
    monkeypatch.setenv("MODALSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MODALSCOPE_SAMPLE_RUNS", str(root))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/learn.py").run()
    for step, missing in (("8 ·", "`joint` and `unimodal` (visual) runs on `complementary`"), ("4 ·", "log the encoder probe")):
        from modalscope.dashboard.learn_steps import STEPS

        at.session_state["learn.step"] = next(s for s in STEPS if s.startswith(step))
        at.run()
        _ok(at)
        assert missing in at.info[0].value
    # no unimodal runs, no probe: the weak modality falls back to the joint model's heads (planted audio 0.60, visual 0.35)
    assert "**visual**, found from the runs: lowest head accuracy inside the joint model" in " ".join(c.value for c in at.caption)


def test_learn_try_it_launches_the_gallery_joint_config_and_opens_it(app, monkeypatch):
    import modalscope.launcher
    from modalscope.gallery import DEFAULT_EPOCHS
    from modalscope.launcher import Launched

    calls = []

    def fake_launch(raw, seeds, runs_dir):  # training takes minutes; plant what the trainer would write
        calls.append((raw, seeds))
        d = plant_run(app.runs, "joint_imbalanced_s0_mine", raw["method"]["name"], seed=seeds[0])
        return [Launched(d.name, d, 0, [])]

    monkeypatch.setattr(modalscope.launcher, "launch", fake_launch)
    at = _learn(app, "9 ·")
    from modalscope.dashboard.learn_steps import try_measured
    from modalscope.dashboard.widgets import fmt_seconds

    m = try_measured()  # the committed measurement: its duration and outcome are what the page states
    caption = " ".join(c.value for c in at.caption)
    assert f"it took {fmt_seconds(m['wall_s'])} ({fmt_seconds(m['cpu_s'])} of CPU time" in caption
    assert f"fused {m['ended']['fused']:.2f}, audio alone {m['ended']['audio alone']:.2f}" in caption
    lesson = abs(m["ended"]["fused"] - m["ended"]["audio alone"]) <= 0.03 and m["ended"]["visual utilisation"] <= 0.4
    assert ("Watch the fused accuracy settle near *audio* alone while the *visual* encoder's probe stays low" in _md(at)) == lesson
    at.button(key="learn.try").click().run()
    _ok(at)
    raw, seeds = calls[0]
    assert seeds == [0] and raw["data"]["preset"] == "imbalanced" and raw["method"]["name"] == "joint" and raw["epochs"] == DEFAULT_EPOCHS
    assert at.title[0].value == "joint_imbalanced_s0_mine"  # Live opened on the new run
    assert at.session_state["live.run"] == "runs/joint_imbalanced_s0_mine"


def test_compare_computes_utilisation_a_run_did_not_log(app):
    """A run trained before its unimodal reference logged probes but no probe_util: Compare computes it
    against the gallery's reference ((0.38 − 0.19) / (0.57 − 0.19) = 0.5) or says why it cannot."""
    from tests.planted_study import _append

    for name, seed in (("mine", 0), ("orphan", 7)):
        d = plant_run(app.runs, name, "joint", seed=seed)
        _append(d, {"probe/test/visual": 0.38, "probe_init/test/visual": 0.19})
    at = app("compare", **{"compare.selected": ["runs/mine", "runs/orphan"]})
    t = _frame(at, "run", "visual utilisation").set_index("run")
    assert t.loc["mine", "visual utilisation"] == "0.500"
    assert t.loc["orphan", "visual utilisation"] == "—"
    assert "No utilisation for orphan (visual): no finished 'unimodal' run with modality=visual" in " ".join(c.value for c in at.caption)
