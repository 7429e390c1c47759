"""Every dashboard page driven through streamlit.testing.v1.AppTest on planted run stores."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from modalscope.store import list_runs
from tests.planted import append_epoch, plant_gallery, plant_run

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    plant_gallery(root)
    return root


@pytest.fixture
def app(gallery, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("MODALSCOPE_RUNS_DIR", str(runs))
    monkeypatch.setenv("MODALSCOPE_SAMPLE_RUNS", str(gallery))

    def make(page: str | None = None, **state):
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        for k, v in state.items():
            at.session_state[k] = v
        if page:
            at.switch_page(f"views/{page}.py")
        at.run()
        _no_exceptions(at)
        return at

    make.runs = runs
    make.gallery = gallery
    return make


def _no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def _frame(at: AppTest, *cols: str, exclude: str = "\0"):
    """The first dataframe on the page that has all of ``cols`` (and not the column ``exclude``)."""
    for d in at.dataframe:
        v = d.value
        if all(c in v.columns for c in cols) and exclude not in v.columns:
            return v
    raise AssertionError(f"no dataframe with columns {cols}: {[list(d.value.columns) for d in at.dataframe]}")


def _decode(v):
    """Plotly's JSON carries numpy arrays as ``{"dtype", "bdata"}`` (base64): turn them into lists."""
    import base64

    import numpy as np

    if isinstance(v, dict):
        if set(v) >= {"dtype", "bdata"}:
            arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
            shape = [int(n) for n in str(v.get("shape", len(arr))).split(",")]
            return arr.reshape(shape).tolist()
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def _charts(at: AppTest) -> list[dict]:
    return [_decode(json.loads(el.proto.spec)) for el in at.get("plotly_chart")]


def _trace_names(at: AppTest) -> list[str]:
    return [t.get("name") for c in _charts(at) for t in c["data"]]


def test_runs_page_lists_the_gallery(app):
    at = app()
    assert at.title[0].value == "Runs"
    table = _frame(at, "name", "progress", "source")
    assert set(table["name"]) == {p.name for p in app.gallery.iterdir()}
    assert set(table["source"]) == {"gallery"}
    row = table.set_index("name").loc["joint_imbalanced_s0"]
    assert row["method"] == "joint" and row["acc_fused"] == "0.800" and "finished" in row["status"]
    assert row["progress"] == "4/4"
    from tests.planted import plant_run  # noqa: F401 - the best-valid value planted: 0.8 · rise(epoch 3 of 4)
    assert row["best_acc_fused"] == f"{round(0.8 * (1 - __import__('math').exp(-3 * 3 / 4)) / (1 - __import__('math').exp(-3)), 4):.3f}"
    alone = table.set_index("name").loc["unimodal-visual_imbalanced_s0"]
    assert alone["acc_audio"] == "—" and alone["acc_visual"] == "0.550"  # a modality the run lacks reads "—", never None


def test_runs_page_empty_roots_say_how_to_start(tmp_path, monkeypatch):
    monkeypatch.setenv("MODALSCOPE_RUNS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("MODALSCOPE_SAMPLE_RUNS", str(tmp_path / "none2"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    _no_exceptions(at)
    assert "No runs yet" in at.info[0].value


def test_open_in_live_from_runs(app):
    at = app()
    at.selectbox(key="runs.open").set_value("gallery/joint_noisy_s0")
    at.button(key="runs.open_live").click().run()
    _no_exceptions(at)
    assert at.title[0].value == "joint_noisy_s0"
    assert any("Thinned for the gallery: samples: every other epoch" in c.value for c in at.caption)


def test_live_renders_histogram_and_gmm(app):
    at = app("live", **{"live.run": "gallery/joint_imbalanced_s1", "live.view": "Modality gap"})
    assert at.title[0].value == "joint_imbalanced_s1"
    charts = _charts(at)
    hist = next(c for c in charts if c["layout"]["title"]["text"].startswith("Modality gap audio-visual"))
    names = [t["name"] for t in hist["data"]]
    assert names == ["samples", "GMM component 1", "GMM component 2", "GMM fit"]
    assert "epoch 4" in hist["layout"]["title"]["text"]
    assert any(c["data"][0]["type"] == "heatmap" for c in charts)
    assert any("BIC₁ = 120.0, BIC₂ = 80.0" in c.value for c in at.caption)


def _chart(at: AppTest, title_start: str) -> dict:
    for c in _charts(at):
        if c["layout"].get("title", {}).get("text", "").startswith(title_start):
            return c
    raise AssertionError(f"no chart titled {title_start!r}: {[c['layout'].get('title', {}).get('text') for c in _charts(at)]}")


def _view(at: AppTest, view: str) -> AppTest:
    at.session_state["live.view"] = view
    at.run()
    _no_exceptions(at)
    return at


def test_live_overview_shows_accuracy_probe_and_labelled_bayes_lines(app):
    at = app("live", **{"live.run": "gallery/ogm_ge_imbalanced_s0"})
    acc = _chart(at, "Accuracy per epoch")
    names = [t["name"] for t in acc["data"]]
    assert "fused (test)" in names and len(next(t for t in acc["data"] if t["name"] == "fused (test)")["x"]) == 4
    ceilings = [t["name"] for t in acc["data"] if t.get("legend") == "legend2"]
    assert ceilings == ["fused 0.93", "audio 0.60", "visual 0.59"] and acc["layout"]["legend2"]["title"]["text"] == "Bayes ceiling"
    probe = _chart(at, "Linear probe")
    assert [t["name"] for t in probe["data"]] == ["audio probe", "audio at init 0.50", "audio trained alone 0.70",
                                                  "visual probe", "visual at init 0.50", "visual trained alone 0.70"]
    assert "GMM fit" in _trace_names(at)
    # the gallery's unimodal seed-0 runs are the references: (0.6 − 0.5) / (0.7 − 0.5) and (0.56 − 0.5) / (0.7 − 0.5)
    util = _frame(at, "modality", "utilisation").set_index("modality")
    assert util["utilisation"].to_dict() == {"audio": "50%", "visual": "30%"} and set(util["trained alone"]) == {"0.700"}


def test_live_overview_says_when_no_trained_alone_reference_exists(app):
    plant_run(app.runs, "lonely", seed=7, epochs=2, steps_per_epoch=2)
    at = app("live", **{"live.run": "runs/lonely"})
    text = " ".join(c.value for c in at.caption)
    assert "audio: no trained-alone reference found" in text and "visual: no trained-alone reference found" in text
    assert not [d for d in at.dataframe if "utilisation" in d.value.columns]


def test_live_gradients_show_before_and_after_the_method(app):
    at = _view(app("live", **{"live.run": "gallery/ogm_ge_imbalanced_s0"}), "Gradients")
    before, after = _chart(at, "Gradient norm before the method"), _chart(at, "Gradient norm after the method")
    b = {t["name"]: t for t in before["data"] if t.get("showlegend") is not False}
    a = {t["name"]: t for t in after["data"] if t.get("showlegend") is not False}
    assert set(b) == {"audio", "visual", "fusion"} and set(a) == {"audio", "visual"}
    assert len(b["audio"]["x"]) == len(a["audio"]["x"]) == 40  # 4 epochs x 10 steps
    if "ogm_ge" in _registry():  # OGM-GE damps the dominant (audio) encoder: applied < computed
        assert max(a["audio"]["y"]) < max(b["audio"]["y"])
    assert _chart(at, "Gradient share after the method")["layout"]["yaxis"]["range"] == [0, 1]
    cos = [t["name"] for t in _chart(at, "Gradient cosines")["data"] if t.get("showlegend") is not False]
    assert cos == ["audio encoder: fused loss vs audio's own loss", "visual encoder: fused loss vs visual's own loss"]


def test_live_draws_a_long_run_from_the_block_summary_with_every_extreme(app):
    """21 000 steps: the Live page reads the 64-step block summary, not the rows; a one-step
    spike in the middle and the real first and last steps are drawn, and every drawn loss point
    is a logged row. Full resolution reads the rows and draws the same extremes."""
    from modalscope.store import RunReader, RunWriter

    d = plant_run(app.runs, "long", epochs=3, steps_per_epoch=7000)
    w = RunWriter(d, resume=True)
    w.log_scalars(10_500, 1, {"loss/total": 99.0})  # a spike, logged after its neighbours
    w.close("finished")
    rows = RunReader(d).scalars(names=["loss/total"])
    at = app("live", **{"live.run": "runs/long"})
    assert any("first, lowest, highest or last value of 64 steps" in c.value for c in at.caption)
    loss = _chart(at, "Training losses")
    raw = next(t for t in loss["data"] if t["name"] == "total (raw)")
    xs, ys = list(raw["x"]), list(raw["y"])
    assert max(ys) == 99.0 and xs[ys.index(99.0)] == 10_500
    assert xs[0] == 0 and xs[-1] == 20_999 and len(xs) <= 2002
    logged = set(zip(rows["step"], rows["value"]))
    assert all((x, y) in logged for x, y in zip(xs, ys))
    grad = _view(at, "Gradients")
    assert max(max(t["y"]) for t in _chart(grad, "Gradient dominance ratio")["data"] if t["type"] == "bar") <= 1.0
    at.session_state["full_resolution"] = True
    full = _view(at, "Overview")
    assert not any("64 steps" in c.value for c in full.caption)
    raw_full = next(t for t in _chart(full, "Training losses")["data"] if t["name"] == "total (raw)")
    assert max(raw_full["y"]) == 99.0 and raw_full["x"][-1] == 20_999


def test_live_shows_the_first_rows_of_a_run_that_had_none(app):
    """A just-launched run (store open, nothing logged): the page says so, then draws the loss
    chart once the first rows are committed (the page looks more often until they arrive)."""
    import json as _json

    from modalscope.store import RunWriter

    d = app.runs / "fresh"
    d.mkdir()
    (d / "config.json").write_text(_json.dumps({"name": "fresh", "epochs": 2, "method": {"name": "joint"}, "data": {"name": "synthetic"}}))
    w = RunWriter(d, heartbeat_seconds=0.5)
    try:
        at = app("live", **{"live.run": "runs/fresh"})
        assert any("no training step logged yet" in c.value for c in at.caption)
        w.log_scalars(0, 0, {"probe_init/test/audio": 0.5})  # rows before the first step (encoder probes at init)
        w.flush()
        at.run()
        assert any("no training step logged yet" in c.value for c in at.caption)
        w.log_scalars(0, 0, {"loss/total": 2.0, "loss/fused": 1.5})
        w.flush()
        at.run()
        _no_exceptions(at)
        loss = _chart(at, "Training losses")
        assert sorted(t["name"] for t in loss["data"]) == ["fused", "total"]
    finally:
        w.close("finished")


def test_live_contributions_have_axes_and_an_explanation(app):
    at = _view(app("live", **{"live.run": "gallery/joint_imbalanced_s0"}), "Contributions")
    c = _chart(at, "Modality contribution")
    assert [t["name"] for t in c["data"] if t["showlegend"]] == ["audio", "visual"]
    assert all(len(t["x"]) == 4 for t in c["data"])
    assert c["layout"]["yaxis"]["title"]["text"] == "weight (sums to 1)" and c["layout"]["legend"]["y"] < 0
    assert any("Captum attribution" in x.value for x in at.caption)


def test_live_method_signals_draw_the_declared_panels(app):
    if "ogm_ge" not in _registry():
        pytest.skip("ogm_ge is not registered on this branch")
    at = _view(app("live", **{"live.run": "gallery/ogm_ge_imbalanced_s0"}), "Method signals")
    k = _chart(at, "Modulation coefficient")
    assert [t["name"] for t in k["data"] if t.get("showlegend") is not False] == ["audio", "visual"]
    assert k["layout"]["yaxis"]["range"] == [0.0, 1.05] and k["layout"]["shapes"][0]["y0"] == 1.0
    rho = _chart(at, "Score ratio")
    assert rho["layout"]["yaxis"]["type"] == "log" and rho["layout"]["shapes"][0]["y0"] == 1.0
    assert sum("How to read it" in c.value for c in at.caption) == 3
    lr = _chart(at, "Learning rate")
    assert lr["layout"]["yaxis"]["range"] == pytest.approx([0.045, 0.055])


def test_live_robustness_chart_has_points_for_every_kind(app):
    at = _view(app("live", **{"live.run": "gallery/joint_imbalanced_s0"}), "Robustness")
    blank = _chart(at, "Accuracy under blank corruption")
    assert blank["data"][0]["type"] == "bar" and list(blank["data"][0]["y"]) == [0.22, 0.5]
    noise = _chart(at, "Accuracy under noise corruption")
    audio = next(t for t in noise["data"] if t["name"] == "audio")
    assert audio["mode"] == "lines+markers" and list(audio["x"]) == [0.0, 0.5, 1.0, 2.0] and audio["y"][0] == 0.84
    table = _frame(at, "modality", "kind", "acc")
    assert len(table) == 8


def _registry():
    from modalscope.methods.base import _REGISTRY

    return _REGISTRY


def test_live_hides_panels_a_unimodal_run_lacks(app):
    at = app("live", **{"live.run": "gallery/unimodal-visual_imbalanced_s0"})
    text = " ".join(c.value for c in at.caption)
    assert "Gradient shares: not in this run" in text and "Modality gap: not in this run" in text
    at.session_state["live.view"] = "Modality gap"
    at.run()
    assert "Modality-gap histograms: not in this run" in " ".join(c.value for c in at.caption)


def test_compare_two_runs_renders_final_table(app):
    at = app("compare", **{"compare.selected": ["gallery/joint_imbalanced_s0", "gallery/joint_noisy_s0"]})
    fin = _frame(at, "run", "n", "fused (last epoch)")
    assert list(fin["run"]) == ["joint_imbalanced_s0", "joint_noisy_s0"]
    assert fin.set_index("run").loc["joint_imbalanced_s0", "gap_to_bayes"] == "0.130"
    titles = [c["layout"]["title"]["text"] for c in _charts(at)]
    assert "acc/test/fused (mean ± std per group)" in titles and any(t.startswith("Final test accuracy") for t in titles)


def test_compare_groups_give_mean_and_std_over_seeds(app):
    at = app("compare", **{"compare.mode": "groups", "compare.groups": ["joint · imbalanced"]})
    fin = _frame(at, "group", "n", "fused (last epoch)").set_index("group")
    runs = list_runs(app.gallery)
    acc = runs[(runs["method"] == "joint") & (runs["preset"] == "imbalanced")]["acc_fused"]
    assert len(acc) >= 2 and fin.loc["joint · imbalanced", "n"] == len(acc)
    assert fin.loc["joint · imbalanced", "fused (last epoch)"] == f"{acc.mean():.3f} ± {acc.std(ddof=0):.3f}"


def test_compare_opens_on_the_teaching_comparison(app):
    """With nothing selected, Compare shows groups: joint vs ogm_ge vs visual alone on the default preset."""
    at = app("compare")
    assert at.radio(key="compare.mode").value == "groups"
    assert at.multiselect(key="compare.groups").value == ["joint · imbalanced", "ogm_ge · imbalanced", "unimodal:visual · imbalanced"]
    fin = _frame(at, "group", "n", "fused (last epoch)").set_index("group")
    assert set(fin.index) == {"joint · imbalanced", "ogm_ge · imbalanced", "unimodal:visual · imbalanced"}


def test_runs_config_diff_and_delete_only_under_runs_root(app):
    plant_run(app.runs, "mine", epochs=1, steps_per_epoch=2, set_=["optim.lr=0.2"])
    at = app()
    at.multiselect(key="runs.selected").set_value(["runs/mine", "gallery/joint_imbalanced_s0"]).run()
    _no_exceptions(at)
    diff = _frame(at, "field").set_index("field")
    assert diff.loc["optim.lr"].tolist() == ["0.2", "0.05"] and "epochs" in diff.index
    at.button(key="runs.delete_confirm").click().run()
    _no_exceptions(at)
    assert not (app.runs / "mine").exists()
    assert (app.gallery / "joint_imbalanced_s0").exists()


def test_sweep_runs_are_grouped_with_parallel_coordinates(app):
    for i, lr in enumerate([0.01, 0.1]):
        for s in (0, 1):
            plant_run(app.runs, f"sw_{i}_s{s}", seed=s, epochs=1, steps_per_epoch=2, set_=[f"optim.lr={lr}"],
                      tags={"sweep": "lrsweep", "swept": "optim.lr,seed"}, final_acc=0.5 + lr)
    at = app()
    groups = _frame(at, "group", "n")
    assert set(groups["group"]) >= {"lrsweep · 0.01", "lrsweep · 0.1"}
    params = _frame(at, "name", "optim.lr", exclude="progress")
    assert set(params["optim.lr"]) == {0.01, 0.1}
    assert any(c["data"][0]["type"] == "parcoords" for c in _charts(at))


def test_launch_bad_value_shows_the_error_inline(app):
    at = app("launch")
    assert "Configuration valid" in at.success[0].value
    assert at.button(key="launch.go").disabled is False
    at.number_input(key="launch.optim.lr").set_value(-1.0).run()
    assert "optim.lr: Input should be greater than 0 (got -1.0)" in at.error[0].value
    assert at.button(key="launch.go").disabled is True  # nothing to click while the form is invalid
    assert not any(app.runs.iterdir())
    at.number_input(key="launch.optim.lr").set_value(0.05)
    at.text_input(key="launch.data.synthetic.dims").set_value("{audio: [1, 2}").run()
    assert "data.dims: not valid YAML" in at.error[0].value


def test_launch_on_user_data_runs_data_check_first(app, tmp_path):
    """A bad npz (NaN features) is reported by the data check and nothing is launched."""
    import numpy as np

    n = 40
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(n, 4)).astype(np.float32)
    audio[3, 1] = np.nan
    f = tmp_path / "bad.npz"
    np.savez(f, audio=audio, visual=rng.normal(size=(n, 3)).astype(np.float32), label=np.arange(n) % 2,
             split=np.array(["train"] * 30 + ["test"] * 10))
    at = app("launch")
    at.selectbox(key="launch.dataset").set_value("npz").run()
    at.text_input(key="launch.data.npz.path").set_value(str(f)).run()
    assert "Configuration valid" in at.success[0].value
    at.button(key="launch.go").click().run()
    _no_exceptions(at)
    msg = " ".join(e.value for e in at.error)
    assert "Data check found" in msg and "nothing was launched" in msg and "NaN" in msg, msg
    assert not any(app.runs.iterdir())


def test_learn_walkthrough_runs_end_to_end(app):
    at = app("learn")
    from modalscope.dashboard.learn_steps import STEPS

    charts_per_step = []
    for step in STEPS:
        at.session_state["learn.step"] = step
        at.run()
        _no_exceptions(at)
        charts_per_step.append(len(at.get("plotly_chart")))
    # the planted gallery logs encoder probes (step 4 draws them) but has no complementary runs (step 8 says what it needs)
    assert charts_per_step[:8] == [1, 1, 1, 1, 1, 1, 1, 0]
    assert at.button(key="learn.try")


def test_learn_degrades_when_runs_are_missing(tmp_path, monkeypatch):
    root = tmp_path / "g"
    plant_run(root, "only_joint", "joint", epochs=2, steps_per_epoch=2)
    monkeypatch.setenv("MODALSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MODALSCOPE_SAMPLE_RUNS", str(root))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/learn.py").run()
    at.session_state["learn.step"] = "2 · Each modality alone"
    at.run()
    _no_exceptions(at)
    assert "needs `unimodal` runs" in at.info[0].value
    at.session_state["learn.step"] = "3 · Together, one wins"
    at.run()
    assert len(at.get("plotly_chart")) == 1


@pytest.mark.slow
def test_launch_good_values_starts_a_run_that_finishes_and_appears(app):
    at = app("launch")
    at.text_input(key="launch.data.synthetic.dims").set_value("{audio: 16, visual: 24}")
    at.number_input(key="launch.data.synthetic.n_train").set_value(256)
    at.number_input(key="launch.data.synthetic.n_test").set_value(128)
    at.number_input(key="launch.model.hidden").set_value(16)
    at.number_input(key="launch.model.embed_dim").set_value(8)
    at.number_input(key="launch.epochs").set_value(2)
    at.text_input(key="launch.name").set_value("from-ui")
    at.run()
    assert "Configuration valid" in at.success[0].value
    at.button(key="launch.go").click().run()
    _no_exceptions(at)
    run_dir = app.runs / "from-ui"
    assert (run_dir / "launch.json").is_file()
    deadline = time.time() + 180
    status = None
    while time.time() < deadline:
        df = list_runs(app.runs)
        if not df.empty and df["status"].iloc[0] in ("finished", "failed"):
            status = df["status"].iloc[0]
            break
        time.sleep(0.5)
    assert status == "finished", (run_dir / "launch.log").read_text()
    at.switch_page("views/runs.py").run()
    table = _frame(at, "name", "progress", "source")
    row = table.set_index("name").loc["from-ui"]
    assert row["source"] == "runs" and "finished" in row["status"] and row["progress"] == "2/2"
    at.session_state["live.run"] = "runs/from-ui"
    at.query_params["run"] = "runs/from-ui"
    at.switch_page("views/live.py").run()
    _no_exceptions(at)
    names = _trace_names(at)
    assert {"fused (test)", "audio (test)", "visual (test)"} <= set(names)  # a real trainer's rows
    assert {"total", "fused"} <= set(names) and "audio" in names and "visual" in names


def test_live_stop_button_sends_sigterm_to_the_trainer_pid(app):
    import subprocess
    import sys

    from modalscope.store import RunWriter

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        d = plant_run(app.runs, "alive", epochs=1, steps_per_epoch=3, status="running")
        w = RunWriter(d, resume=True, heartbeat_seconds=3600)
        w.set("pid", sleeper.pid)
        at = app("live", **{"live.run": "runs/alive"})
        assert "running" in at.metric[0].value
        at.button(key="live.stop").click().run()
        _no_exceptions(at)
        assert sleeper.wait(10) == -15  # SIGTERM
    finally:
        sleeper.kill()


def test_live_shows_a_starting_run_with_its_log(app):
    d = app.runs / "booting"
    d.mkdir()
    (d / "launch.log").write_text("run folder: runs/booting\n")
    at = app("live", **{"live.run": "runs/booting"})
    assert "Starting" in at.info[0].value
    assert "run folder: runs/booting" in at.code[0].value


def test_dashboard_command_binds_loopback_by_default():
    from modalscope.cli import build_parser, dashboard_command

    args = build_parser().parse_args(["dashboard"])
    argv = dashboard_command(args.host, args.port, args.runs_dir, args.sample_runs)
    assert isinstance(argv, list) and argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[-5:] == ["--", "--runs-dir", "runs", "--sample-runs", "sample_runs"]
    assert argv[argv.index("run") + 1] == APP


def test_live_shows_a_trainer_that_died_before_its_store(app):
    d = app.runs / "broken"
    d.mkdir()
    (d / "launch.log").write_text("error: device: 'cuda' requested but no CUDA device is available\n")
    at = app("live", **{"live.run": "runs/broken"})
    assert "stopped before it opened its run store" in at.error[0].value
    assert "no CUDA device" in at.code[0].value


def test_gap_histogram_follows_the_newest_epoch_until_the_slider_moves(app):
    d = plant_run(app.runs, "growing", epochs=2, steps_per_epoch=2, status="running", set_=["epochs=10"])
    at = app("live", **{"live.run": "runs/growing", "live.view": "Modality gap"})
    assert "epoch 2 ·" in _chart(at, "Modality gap audio-visual")["layout"]["title"]["text"]
    append_epoch(d, 2)
    at.run()
    assert "epoch 3 ·" in _chart(at, "Modality gap audio-visual")["layout"]["title"]["text"]
    assert at.select_slider(key="live.gap.epoch").value == 2
    at.select_slider(key="live.gap.epoch").set_value(0).run()  # the user pins epoch 1
    append_epoch(d, 3)
    at.run()
    assert "epoch 1 ·" in _chart(at, "Modality gap audio-visual")["layout"]["title"]["text"]
    at.select_slider(key="live.gap.epoch").set_value(3).run()  # back at the end: follows again
    append_epoch(d, 4)
    at.run()
    assert "epoch 5 ·" in _chart(at, "Modality gap audio-visual")["layout"]["title"]["text"]


def test_stopped_run_is_not_an_error_and_counts_epochs_like_runs_list(app):
    from modalscope.store import RunWriter

    d = plant_run(app.runs, "stopped", epochs=3, steps_per_epoch=4, status="running", set_=["epochs=10"])
    w = RunWriter(d, resume=True, heartbeat_seconds=3600)
    w.log_scalars(12, 3, {"loss/total": 1.0})  # a step into epoch 4, then SIGTERM
    w.close("interrupted", "stopped by signal 15 at step 13")
    at = app("live", **{"live.run": "runs/stopped"})
    assert at.info[0].value.startswith("Stopped by you at step 13, before the run's first checkpoint")
    (d / "checkpoint.pt").write_bytes(b"")
    at = app("live", **{"live.run": "runs/stopped"})
    assert not at.error
    msg = at.info[0].value
    assert msg.startswith("Stopped by you at step 13; resume with `modalscope train --resume ") and str(d) in msg
    assert at.metric[1].value == "3/10"
    row = list_runs(app.runs).set_index("name").loc["stopped"]
    assert (row["epochs_done"], row["epochs"]) == (3, 10)
    at.switch_page("views/runs.py").run()
    assert _frame(at, "name", "progress").set_index("name").loc["stopped", "progress"] == "3/10"


def test_launch_names_the_two_seeds_apart_defaults_to_gallery_epochs_and_hides_ignored_knobs(app):
    from modalscope.gallery import DEFAULT_EPOCHS

    at = app("launch")
    assert at.number_input(key="launch.epochs").value == DEFAULT_EPOCHS == 20
    seeds = at.text_input(key="launch.seeds")
    data_seed = at.number_input(key="launch.data.synthetic.seed")
    assert (data_seed.label, seeds.label) == ("data seed", "training seeds")
    assert "same dataset" in data_seed.help and "differ only in training" in seeds.help
    keys = {w.key for w in at.selectbox}
    assert "launch.data.synthetic.corrupt_kind" not in keys  # the default preset corrupts nothing
    assert "launch.data.synthetic.corrupt_modality" not in {w.key for w in at.text_input}
    at.selectbox(key="launch.data.synthetic.preset").set_value("noisy").run()
    assert "launch.data.synthetic.corrupt_kind" in {w.key for w in at.selectbox}
    assert "launch.data.synthetic.corrupt_modality" in {w.key for w in at.text_input}


def test_live_opens_on_the_users_newest_run(app):
    plant_run(app.runs, "older", epochs=1, steps_per_epoch=2)
    time.sleep(0.05)
    plant_run(app.runs, "newer", epochs=1, steps_per_epoch=2)
    at = app("live")
    assert at.title[0].value == "newer"
