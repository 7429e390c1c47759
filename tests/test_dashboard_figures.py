"""Figure builders and table helpers on small hand-made frames (known answers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from modalscope.dashboard import figures as F
from modalscope.dashboard import summaries as S
from tests.planted import GMM, gmm_counts


def _valid(fig: go.Figure) -> go.Figure:
    """The builders skip plotly's validation for speed; validate their output here once
    (raises on any invalid property) and return the original, whose arrays stay numpy."""
    go.Figure(fig.to_dict())
    return fig


def _long(rows):
    return pd.DataFrame(rows, columns=["step", "epoch", "name", "value"])


def test_downsample_keeps_spikes_and_bounds_points():
    x = np.arange(100_000)
    y = np.zeros(100_000)
    y[12_345] = 50.0
    y[77_777] = -7.0
    xs, ys = F.downsample_minmax(x, y, 2000)
    assert len(xs) <= 2002
    assert 12_345 in xs and 77_777 in xs
    assert ys.max() == 50.0 and ys.min() == -7.0
    assert xs[0] == 0 and xs[-1] == 99_999 and np.all(np.diff(xs) > 0)
    xs2, ys2 = F.downsample_minmax(x[:10], y[:10], 2000)
    assert np.array_equal(xs2, x[:10])


def test_ema_is_debiased_and_skips_nan():
    out = F.ema([1.0, 2.0, np.nan, 4.0], 0.5)
    # s1 = 1; s2 = (0.5*2 + 0.25*1)/(0.75); s4 = (4 + 0.25*2 + 0.125*1)/(1 + 0.25 + 0.125)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(1.25 / 0.75)
    assert np.isnan(out[2])
    assert out[3] == pytest.approx(4.625 / 1.375)
    assert np.array_equal(F.ema([3.0, 1.0], 0.0), [3.0, 1.0])


def test_scalar_lines_traces_axes_and_modality_colours():
    df = _long([(s, 0, f"grad_norm/{m}", float(s)) for s in range(5) for m in ("audio", "visual")])
    fig = _valid(F.scalar_lines(df, "Gradient norm", "‖g‖", prefix="grad_norm/"))
    assert [t.name for t in fig.data] == ["audio", "visual"]
    assert fig.data[0].line.color == F.MODALITY_COLORS["audio"] and fig.data[1].line.color == F.MODALITY_COLORS["visual"]
    assert fig.layout.xaxis.title.text == "step" and fig.layout.yaxis.title.text == "‖g‖"
    assert fig.layout.title.text == "Gradient norm"
    smooth = _valid(F.scalar_lines(df, "t", "y", prefix="grad_norm/", smoothing=0.9))
    assert len(smooth.data) == 4 and smooth.data[0].showlegend is False


def test_long_series_is_downsampled_in_the_figure():
    n = 100_000
    df = pd.DataFrame({"step": np.arange(n), "epoch": 0, "name": "loss/total", "value": np.random.default_rng(0).random(n)})
    fig = F.scalar_lines(df, "Loss", "nats", prefix="loss/")
    assert len(fig.data[0].x) <= F.MAX_POINTS + 2


def test_accuracy_figure_splits_and_bayes_lines():
    df = _long([(9, e, f"acc/{sp}/{m}", 0.1 * e) for e in range(3) for sp in ("train", "test") for m in ("fused", "audio")])
    fig = _valid(F.accuracy_figure(df, {"fused": 0.93, "text": 0.5}))
    names = {t.name for t in fig.data}
    assert names == {"fused (test)", "fused (train)", "audio (test)", "audio (train)", "fused 0.93"}  # labelled, no "text"
    test_fused = next(t for t in fig.data if t.name == "fused (test)")
    assert list(test_fused.x) == [1, 2, 3] and test_fused.line.dash == "solid"
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].y0 == pytest.approx(0.93)
    bayes = next(t for t in fig.data if t.name == "fused 0.93")
    assert list(bayes.y) == [0.93, 0.93] and bayes.line.color == F.MODALITY_COLORS["fused"] and bayes.line.dash == "dot"
    assert bayes.legend == "legend2" and fig.layout.legend2.title.text == "Bayes ceiling"
    assert fig.layout.xaxis.title.text == "epoch" and fig.layout.yaxis.title.text == "accuracy"


def test_gmm_density_integrates_to_histogram_mass():
    edges = np.linspace(-1, 1, 41)
    counts = gmm_counts(edges, 1000)
    curves = F.gmm_density_curves(GMM, edges, counts.sum(), n_points=4001)
    width = edges[1] - edges[0]
    mass = np.trapezoid(curves["mixture"], curves["x"]) / width
    assert mass == pytest.approx(counts.sum(), rel=0.01)
    comp = [np.trapezoid(curves[f"component{k}"], curves["x"]) / width for k in range(2)]
    assert comp[0] / sum(comp) == pytest.approx(0.7, abs=0.01)
    # the mixture evaluated at each bin centre matches the planted expected counts
    centres = (edges[:-1] + edges[1:]) / 2
    at_centres = np.interp(centres, curves["x"], curves["mixture"])
    big = counts > 20
    assert np.allclose(at_centres[big], counts[big], rtol=0.08)


def test_gap_histogram_with_gmm_overlay():
    edges = np.linspace(-1, 1, 41)
    counts = gmm_counts(edges, 1000)
    hist = {"edges": edges, "counts": counts, "name": "audio-visual", "epoch": 2, "split": "test"}
    g = {**GMM, "threshold": 0.2, "balanced": 0}
    fig = _valid(F.gap_histogram_figure(hist, g))
    assert [t.name for t in fig.data] == ["samples", "GMM component 1", "GMM component 2", "GMM fit"]
    assert np.array_equal(np.asarray(fig.data[0].y), counts)
    assert "epoch 3" in fig.layout.title.text
    assert fig.layout.shapes[0].x0 == pytest.approx(0.2)
    assert fig.layout.yaxis.title.text == "samples"
    modality_colours = {F.MODALITY_COLORS[m] for m in ("audio", "visual", "text")}
    assert not {t.line.color for t in fig.data[1:]} & modality_colours  # a component is not a modality
    assert fig.layout.shapes[0].line.color not in modality_colours
    balanced = _valid(F.gap_histogram_figure(hist, {"weights": [1.0], "means": [0.0], "variances": [0.1], "threshold": float("nan"), "balanced": 1}))
    assert [t.name for t in balanced.data] == ["samples", "1-component fit"] and not balanced.layout.shapes
    bare = _valid(F.gap_histogram_figure(hist, None))
    assert len(bare.data) == 1


def test_heatmap_rows_are_shares_per_epoch():
    edges = np.linspace(-1, 1, 5)
    h = pd.DataFrame({"epoch": [0, 1], "edges": [edges, edges], "counts": [np.array([1, 1, 2, 0.0]), np.array([0, 0, 0, 4.0])]})
    fig = _valid(F.gap_heatmap_figure(h))
    z = np.asarray(fig.data[0].z)
    assert np.allclose(z.sum(axis=1), 1.0) and z[1, 3] == 1.0
    assert list(fig.data[0].y) == [1, 2]


def test_band_is_mean_plus_minus_population_std():
    df = pd.DataFrame({"group": ["g"] * 4 + ["h"] * 2, "run": ["a", "a", "b", "b", "c", "c"], "epoch": [0, 1, 0, 1, 0, 1],
                       "value": [1.0, 2.0, 3.0, 6.0, 5.0, 5.0]})
    st = F.band_stats(df, "epoch").set_index(["group", "epoch"])
    assert st.loc[("g", 0), "mean"] == 2.0 and st.loc[("g", 0), "std"] == 1.0 and st.loc[("g", 1), "std"] == 2.0
    fig = _valid(F.band_figure(df, "acc", "accuracy", x="epoch"))
    band = fig.data[0]
    assert band.fill == "toself"
    assert list(band.y) == [3.0, 6.0, 2.0, 1.0]  # upper at epochs 1,2 then lower reversed
    assert [t.name for t in fig.data[1:]] == ["g (n=2)", "h (n=1)"]  # a single-run group has no band
    assert list(fig.data[1].x) == [1, 2]


def test_contributions_conflict_parcoords_bars_are_valid():
    c = pd.DataFrame({"epoch": [0, 0, 1, 1], "modality": ["audio", "visual"] * 2, "info": [0.4, 0.1, 0.5, 0.2],
                      "confidence": [0.8, 0.3, 0.9, 0.4], "w": [0.7, 0.3, 0.6, 0.4], "captum": [None] * 4})
    fig = _valid(F.contributions_figure(c))
    assert len(fig.data) == 6 and fig.layout.xaxis3.title.text == "epoch"
    r = _long([(s, 0, "grad_ratio", 3.0) for s in range(10)] + [(s, 0, "conflict/flag", float(s % 2)) for s in range(10)])
    fig = _valid(F.conflict_figure(r, tau=2.0))
    assert fig.data[0].name == "dominance ratio" and fig.data[1].type == "bar" and fig.layout.yaxis.type == "log"
    tau = fig.layout.annotations[0]  # τ label inside the plot on a white patch: the right margin holds the flag axis
    assert tau.text == "τ = 2" and tau.x <= 1 and tau.bgcolor and fig.layout.shapes[0].y0 == 2.0
    runs = pd.DataFrame({"method.name": ["joint", "ogm_ge", "joint"], "optim.lr": [0.1, 0.1, 0.01], "acc_fused": [0.8, 0.85, 0.7]})
    pc = _valid(F.parallel_coords_figure(runs, ["method.name", "optim.lr"]))
    dims = pc.data[0].dimensions
    assert [d.label for d in dims] == ["method.name", "optim.lr", "acc_fused"] and list(dims[0].ticktext) == ["joint", "ogm_ge"]
    bars = _valid(F.final_bars_figure(runs.assign(group=runs["method.name"]), ["acc_fused"]))
    assert list(bars.data[0].x) == ["joint", "ogm_ge"] and bars.data[0].y[0] == pytest.approx(0.75)
    assert F.empty_figure("t", "nothing").layout.annotations[0].text == "nothing"


# ---------------------------------------------------------------------------- summaries
def test_config_diff_and_flatten():
    a = {"optim": {"lr": 0.1, "name": "sgd"}, "seed": 0, "data": {"dims": {"audio": 16}}}
    b = {"optim": {"lr": 0.2, "name": "sgd"}, "seed": 0, "data": {"dims": {"audio": 32}}, "extra": [1, 2]}
    assert S.flatten_config(a) == {"optim.lr": 0.1, "optim.name": "sgd", "seed": 0, "data.dims.audio": 16}
    d = S.config_diff(a, b, "A", "B")
    assert d["field"].tolist() == ["data.dims.audio", "extra", "optim.lr"]
    assert d.set_index("field").loc["extra"].tolist() == ["—", "[1, 2]"]
    assert len(S.config_diff(a, b, "A", "B", include_all=True)) == 5


def test_swept_and_varying_fields_and_groups():
    c1 = {"tags": {"sweep": "s", "swept": "method.name, optim.lr"}, "optim": {"lr": 0.1}, "seed": 0, "name": "x"}
    c2 = {"tags": {"sweep": "s", "swept": "optim.lr,seed"}, "optim": {"lr": 0.2}, "seed": 1, "name": "y"}
    assert S.swept_fields([c1, c2]) == ["method.name", "optim.lr", "seed"]
    assert S.swept_fields([{"tags": {"swept": ["a.b", "c"]}}]) == ["a.b", "c"]
    assert S.describe_thinning({"samples": "every other epoch"}) == "samples: every other epoch"
    assert S.describe_thinning("") == ""
    assert S.varying_fields([c1, c2]) == ["optim.lr"]
    runs = pd.DataFrame({"key": ["runs/x", "runs/y"], "name": ["x", "y"], "method": ["joint", "ogm_ge"]})
    out = S.add_config_columns(runs, {"runs/x": c1, "runs/y": c2}, ["optim.lr"])
    assert out["optim.lr"].tolist() == [0.1, 0.2]
    assert S.group_labels(out.assign(preset="p"), ["method", "preset"]).tolist() == ["joint · p", "ogm_ge · p"]
    assert S.group_labels(out.assign(sweep=["", "s1"]), ["sweep", "optim.lr"]).tolist() == ["no sweep · 0.1", "s1 · 0.2"]


def test_final_metrics_table_mean_std_and_bayes_gap():
    runs = pd.DataFrame({"group": ["joint", "joint", "ogm"], "acc_fused": [0.8, 0.9, 0.88], "acc_visual": [0.2, 0.4, 0.5],
                         "bayes_fused": [0.93, 0.93, 0.93], "wall_s": [10.0, 12.0, 20.0]})
    t = S.final_metrics_table(runs).set_index("group")
    assert t.loc["joint", "n"] == 2
    assert t.loc["joint", "acc_fused mean"] == pytest.approx(0.85) and t.loc["joint", "acc_fused std"] == pytest.approx(0.05)
    assert t.loc["ogm", "gap_to_bayes mean"] == pytest.approx(0.05)
    assert t.loc["joint", "wall_s mean"] == pytest.approx(11.0)
    f = S.format_mean_std(t.reset_index()).set_index("group")
    assert f.loc["joint", "acc_fused"] == "0.850 ± 0.050" and f.loc["ogm", "acc_fused"] == "0.880"


def test_find_runs_by_config_not_name():
    runs = pd.DataFrame({"key": ["gallery/a", "gallery/b", "gallery/c"], "name": ["weird", "joint_x", "other"],
                         "status": ["finished", "finished", "running"]})
    cfgs = {"gallery/a": {"method": {"name": "joint"}, "data": {"preset": "imbalanced"}},
            "gallery/b": {"method": {"name": "unimodal", "modality": "visual"}, "data": {"preset": "imbalanced"}},
            "gallery/c": {"method": {"name": "joint"}, "data": {"preset": "imbalanced"}}}
    assert S.find_runs(runs, cfgs, method="joint", preset="imbalanced")["key"].tolist() == ["gallery/a"]
    assert S.find_runs(runs, cfgs, method="unimodal", modality="visual")["name"].tolist() == ["joint_x"]
    assert S.find_runs(runs, cfgs, method="joint", finished_only=False)["key"].tolist() == ["gallery/a", "gallery/c"]


def test_form_treats_required_fields_as_empty_and_parses_yaml(monkeypatch):
    """Launch-form widgets from pydantic fields: required → empty box; YAML text → value."""
    from pydantic import BaseModel, Field

    from modalscope.dashboard import form

    class P(BaseModel):
        path: str = Field(..., description="Data file.")
        dims: dict | None = Field(None, description="Dims.")
        lr: float = Field(0.1, gt=0, description="Learning rate.")

    class FakeCol:
        def __init__(self, answers):
            self.answers = answers

        def text_input(self, label, value="", key=None, **kw):
            assert "PydanticUndefined" not in value
            return self.answers.get(key, value)

        def number_input(self, label, value=0, key=None, **kw):
            return self.answers.get(key, value)

    col = FakeCol({"launch.data.x.dims": "{audio: 16}"})
    assert form.field_widget("data.x", "path", P.model_fields["path"], container=col) == (False, None)
    assert form.field_widget("data.x", "dims", P.model_fields["dims"], container=col) == (True, {"audio": 16})
    assert form.field_widget("data.x", "lr", P.model_fields["lr"], container=col) == (True, 0.1)
    assert form.field_help(P.model_fields["lr"]) == "Learning rate. (> 0)"


def test_gmm_curve_of_a_component_narrower_than_a_bin_stays_on_the_bars():
    """A component far narrower than a bin: the curve at that bin is its expected count
    (all of its mass), not the scaled density, which would rise far above every bar."""
    edges = np.linspace(-1, 1, 41)
    gmm = {"weights": [0.2, 0.8], "means": [0.0, 0.825], "variances": [0.04, 1e-6]}  # σ = 0.001, bins 0.05 wide
    curves = F.gmm_density_curves(gmm, edges, 1000.0, n_points=4001)
    assert curves["component1"].max() == pytest.approx(800.0, rel=1e-6)  # the whole component in one bin
    assert curves["mixture"].max() <= 1000.0
    width = edges[1] - edges[0]
    assert np.trapezoid(curves["mixture"], curves["x"]) / width == pytest.approx(1000.0, rel=0.01)
