"""Paired Δ vs joint, rankings, pooled histograms and the Learn page's computed claims (known answers)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from modalscope.dashboard import comparison as C
from modalscope.dashboard import lessons as L


def test_t_interval_known_numbers():
    # mean 2, s = 1, n = 3: half-width = t_{0.975, 2} · 1/√3 = 4.302653 / 1.732051 = 2.484138
    mean, lo, hi, n = C.t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert lo == pytest.approx(2 - 2.484138, abs=1e-6) and hi == pytest.approx(2 + 2.484138, abs=1e-6)
    # n = 5, values 0.01..0.05: mean 0.03, s = 0.0158114, t_{0.975, 4} = 2.776445 → half 0.0196324
    mean, lo, hi, n = C.t_interval([0.01, 0.02, 0.03, 0.04, 0.05, float("nan")])
    assert n == 5 and mean == pytest.approx(0.03)
    assert hi - mean == pytest.approx(0.0196324, abs=1e-6)
    mean, lo, hi, n = C.t_interval([0.5])
    assert mean == 0.5 and n == 1 and math.isnan(lo) and math.isnan(hi)
    assert C.t_interval([])[3] == 0


def _runs():
    rows = []
    joint = {0: 0.70, 1: 0.72, 2: 0.74}
    ogm = {0: 0.73, 1: 0.74, 2: 0.78}  # Δ = 0.03, 0.02, 0.04
    for s in range(3):
        rows.append({"key": f"gallery/joint_s{s}", "source": "gallery", "method": "joint", "dataset": "synthetic", "preset": "imbalanced",
                     "seed": s, "acc_fused": joint[s], "util_visual": 0.2})
        rows.append({"key": f"gallery/ogm_s{s}", "source": "gallery", "method": "ogm_ge", "dataset": "synthetic", "preset": "imbalanced",
                     "seed": s, "acc_fused": ogm[s], "util_visual": 0.2 + 0.1 * (s + 1)})
    rows.append({"key": "gallery/ogm_noisy_s0", "source": "gallery", "method": "ogm_ge", "dataset": "synthetic", "preset": "noisy",
                 "seed": 0, "acc_fused": 0.9, "util_visual": 0.5})
    rows.append({"key": "runs/joint_s0_mine", "source": "runs", "method": "joint", "dataset": "synthetic", "preset": "imbalanced",
                 "seed": 0, "acc_fused": 0.10, "util_visual": 0.0})
    df = pd.DataFrame(rows)
    df["group"] = df["method"] + " · " + df["preset"]
    return df


def test_pairing_by_seed_prefers_same_source_and_leaves_unpaired_nan():
    df = _runs()
    ref = C.pair_with_reference(df)
    by = dict(zip(df["key"], ref))
    assert by["gallery/ogm_s1"] == "gallery/joint_s1"
    assert by["gallery/joint_s0"] == "gallery/joint_s0"  # not the user's joint run of seed 0
    assert by["runs/joint_s0_mine"] == "runs/joint_s0_mine"
    assert pd.isna(by["gallery/ogm_noisy_s0"])  # no joint run on noisy


def test_delta_summary_paired_by_seed():
    df = _runs()
    df["ref"] = C.pair_with_reference(df)
    d = C.delta_summary(df, "acc_fused").set_index("group")
    r = d.loc["ogm_ge · imbalanced"]
    assert r["n_pairs"] == 3 and r["delta"] == pytest.approx(0.03)
    assert r["high"] - r["delta"] == pytest.approx(2.484138 * 0.01, abs=1e-6)  # s of (0.03, 0.02, 0.04) = 0.01
    assert d.loc["joint · imbalanced", "is_reference"] and d.loc["joint · imbalanced", "delta"] == 0
    assert d.loc["ogm_ge · noisy", "n_pairs"] == 0
    assert C.format_delta(r["delta"], r["low"], r["high"], 3) == "+0.030 [+0.005, +0.055] (3 seeds)"
    assert C.format_delta(0.0, 0.0, 0.0, 3, is_reference=True) == "reference"
    assert C.format_delta(-0.02, np.nan, np.nan, 1) == "-0.020 (1 seed)"
    assert C.format_delta(np.nan, np.nan, np.nan, 0) == "—"


def test_rank_highest_first_ties_share():
    assert list(C.rank(pd.Series([0.7, 0.9, 0.7, np.nan]))[:3]) == [2.0, 1.0, 2.0]


def test_final_metric_columns_reads_contract_names():
    finals = {"acc/best/test/fused": 0.81, "probe/test/visual": 0.4, "probe_init/test/visual": 0.2, "probe_util/visual": 0.5,
              "probe/bit/visual/0": 0.9}
    out = C.final_metric_columns(finals, ["audio", "visual"])
    assert out["best_fused"] == 0.81 and out["probe_visual"] == 0.4 and out["probe_init_visual"] == 0.2 and out["util_visual"] == 0.5
    assert math.isnan(out["util_audio"])


def test_pool_histograms_sums_counts_on_equal_edges():
    e = np.linspace(-1, 1, 5)
    rows = [{"edges": e, "counts": np.array([1, 2, 3, 4.0]), "epoch": 3}, {"edges": e, "counts": np.array([0, 1, 0, 1.0]), "epoch": 3},
            {"edges": np.linspace(-2, 2, 5), "counts": np.array([9, 9, 9, 9.0]), "epoch": 3}]
    p = C.pool_histograms(rows)
    assert list(p["counts"]) == [1, 3, 3, 5] and p["n_runs"] == 2 and p["epoch"] == 3
    assert C.pool_histograms([]) is None


def test_weak_modality_from_data_in_order_of_evidence():
    m, why = L.weak_modality(alone={"audio": 0.80, "visual": 0.57})
    assert m == "visual" and "trained alone" in why and "visual 0.57" in why
    assert L.weak_modality(alone={"audio": 0.5, "visual": 0.9})[0] == "audio"  # not always the last one
    m, why = L.weak_modality(alone={"audio": 0.8}, utilisation={"audio": 0.9, "visual": 0.3, "text": 0.1})
    assert m == "text" and "utilisation" in why
    assert L.weak_modality(heads={"audio": 0.2, "visual": 0.6})[0] == "audio"
    assert L.weak_modality()[0] is None


def test_weak_measure_prefers_utilisation():
    assert L.weak_measure(["acc_visual", "probe_visual", "util_visual"], "visual")[0] == "util_visual"
    assert L.weak_measure(["acc_visual", "probe_visual"], "visual")[0] == "probe_visual"
    assert L.weak_measure(["acc_audio"], "visual")[0] is None


def test_verdicts_apply_raise_without_losing_fused():
    rows = []
    spec = {  # method: (Δ fused per seed, Δ util per seed)
        "joint": ([0, 0, 0], [0, 0, 0]),
        "good": ([0.01, 0.0, 0.02], [0.3, 0.4, 0.35]),     # raises, keeps → pass
        "loses": ([-0.05, -0.04, -0.06], [0.3, 0.4, 0.5]),  # raises, loses fused → fail
        "noisy": ([0.0, 0.0, 0.0], [0.3, -0.3, 0.05]),      # Δ util interval spans 0 → fail
    }
    for meth, (df_, du) in spec.items():
        for s in range(3):
            rows.append({"key": f"{meth}{s}", "method": meth, "group": meth, "seed": s, "dataset": "d", "preset": "p",
                         "acc_fused": 0.7 + df_[s], "util_visual": 0.2 + du[s]})
    df = pd.DataFrame(rows)
    df["ref"] = C.pair_with_reference(df)
    v = L.verdicts(df, "util_visual").set_index("group")
    assert "joint" not in v.index
    assert v.loc["good", "passes"] and v.loc["good", "d_fused"] == pytest.approx(0.01)
    assert v.loc["loses", "raises"] and not v.loc["loses", "keeps"] and not v.loc["loses", "passes"]
    assert not v.loc["noisy", "raises"] and v.loc["noisy", "keeps"]


def test_shortfall_kind_separates_suppression_from_specialisation():
    assert L.shortfall_kind(head=0.22, alone=0.43, utilisation=0.98) == "specialisation"
    assert L.shortfall_kind(head=0.30, alone=0.57, utilisation=0.2) == "suppression"
    assert L.shortfall_kind(head=0.55, alone=0.57, utilisation=0.2) == "none"
    assert L.shortfall_kind(head=0.30, alone=0.57, utilisation=0.55) == "partial"
    assert L.shortfall_kind(head=0.30, alone=0.57, utilisation=float("nan")) == "unknown"


def test_bit_utilisation_tells_specialisation_from_suppression():
    # the complementary preset as measured: the visual encoder keeps bit 2 (the bit audio lacks) and drops bits 0 and 1
    run = {"probe/bit/visual/0": 0.565, "probe/bit/visual/1": 0.538, "probe/bit/visual/2": 0.894,
           "probe_init/bit/visual/0": 0.556, "probe_init/bit/visual/1": 0.547, "probe_init/bit/visual/2": 0.607}
    alone = {"probe/bit/visual/0": 0.700, "probe/bit/visual/1": 0.703, "probe/bit/visual/2": 0.895}
    bits = L.bit_utilisation(run, alone, "visual")
    assert bits[0] == pytest.approx(0.009 / 0.144) and bits[1] == pytest.approx(-0.009 / 0.156) and bits[2] == pytest.approx(0.287 / 0.288)
    # overall utilisation 0.38 alone would read as (partial) suppression; the bits show specialisation
    assert L.shortfall_kind(0.22, 0.43, 0.38, bits) == "specialisation"
    assert L.shortfall_kind(0.22, 0.43, 0.38) == "suppression"
    starved = {0: 0.26, 1: 0.25, 2: 0.37}
    assert L.shortfall_kind(0.16, 0.54, 0.15, starved) == "suppression"
    assert L.bit_utilisation({"probe/bit/visual/0": 0.6, "probe_init/bit/visual/0": 0.6}, {"probe/bit/visual/0": 0.6}, "visual") == {}


def test_gradient_share_story_reads_the_series():
    steps = np.arange(400)
    share = np.where(steps < 40, 0.1, np.where((steps >= 130) & (steps < 250), 0.85, 0.3))
    story = L.gradient_share_story(pd.DataFrame({"step": steps, "value": share}), "visual", "audio")
    assert story["early"] == pytest.approx(0.1, abs=0.01)
    assert story["late"] == pytest.approx(0.3)
    # 20 bins of 20 steps: bins 7..11 (steps 140-239) are fully above one half; bin 6 (120-139) is half 0.3 half 0.85
    assert story["peak_from"] == 120 and story["peak_to"] == 259
    text = L.gradient_share_text(story, "visual", "audio")
    assert "**10%**" in text and "between steps 120 and 259" in text and "last quarter it gets **30%**" in text
    flat = L.gradient_share_story(pd.DataFrame({"step": steps, "value": np.full(400, 0.2)}), "visual", "audio")
    assert "never holds more than half" in L.gradient_share_text(flat, "visual", "audio")


# ---------------------------------------------------------------------------------------------- figures
def _valid(fig):
    import plotly.graph_objects as go

    go.Figure(fig.to_dict())
    return fig


def test_levels_bars_draw_labelled_reference_lines_in_modality_colours():
    from modalscope.dashboard import figures as F
    from modalscope.dashboard.figures_compare import Level, levels_bars_figure

    df = pd.DataFrame({"group": ["a", "a", "b"], "acc_fused": [0.7, 0.8, 0.6], "acc_visual": [0.3, 0.3, 0.5]})
    fig = _valid(levels_bars_figure(df, ["acc_fused", "acc_visual"], [Level("visual alone", 0.57, "visual"), Level("audio alone", 0.59, "audio"),
                                                                      Level("Bayes ceiling (fused)", 0.93, "fused", "dash")]))
    assert list(fig.data[0].y) == pytest.approx([0.75, 0.6])
    shapes = {round(s.y0, 2): s for s in fig.layout.shapes}
    assert set(shapes) == {0.57, 0.59, 0.93}
    assert shapes[0.57].line.color == F.MODALITY_COLORS["visual"] and shapes[0.93].line.dash == "dash"
    notes = {a.text: a for a in fig.layout.annotations}
    assert set(notes) == {"visual alone 0.57", "audio alone 0.59", "Bayes ceiling (fused) 0.93"}
    assert notes["visual alone 0.57"].x != notes["audio alone 0.59"].x  # close levels: labels staggered


def test_modality_bands_colour_groups_by_modality_not_by_position():
    from modalscope.dashboard import figures as F
    from modalscope.dashboard.figures_learn import modality_bands

    df = pd.DataFrame({"group": ["visual alone"] * 4 + ["audio alone"] * 4, "run": ["v1", "v1", "v2", "v2", "a1", "a1", "a2", "a2"],
                       "epoch": [0, 1] * 4, "value": [0.1, 0.2, 0.15, 0.25, 0.5, 0.6, 0.55, 0.65]})
    fig = _valid(modality_bands(df, {"audio alone": "audio", "visual alone": "visual"}, "t", "acc"))
    lines = {t.legendgroup: t.line.color for t in fig.data if t.mode == "lines"}
    assert lines == {"audio alone": F.MODALITY_COLORS["audio"], "visual alone": F.MODALITY_COLORS["visual"]}


def test_probe_bars_and_shortfall_figures():
    from modalscope.dashboard.figures_compare import Level
    from modalscope.dashboard.figures_learn import probe_bars_figure, shortfall_figure

    bars = pd.DataFrame({"label": ["joint", "visual alone"], "mean": [0.27, 0.57], "std": [0.01, np.nan], "n": [3, 3]})
    fig = _valid(probe_bars_figure(bars, "visual", [Level("at initialisation", 0.19, "total")], "probe"))
    assert list(fig.data[0].x) == ["joint", "visual alone"] and list(fig.data[0].error_y.array) == [0.01, 0.0]
    assert fig.layout.annotations[0].text == "at initialisation 0.19"
    sf = pd.DataFrame({"preset": ["imbalanced", "complementary"] * 2, "measure": ["head (joint)"] * 2 + ["probe (alone)"] * 2,
                       "value": [0.3, 0.22, 0.57, 0.89]})
    fig = _valid(shortfall_figure(sf, "visual", "s"))
    assert [t.name for t in fig.data] == ["visual head (joint)", "visual probe (alone)"]
    assert fig.data[1].marker.pattern.shape == "/"


def test_bit_utilisation_figure_groups_bits_by_preset():
    from modalscope.dashboard.figures_learn import bit_utilisation_figure

    df = pd.DataFrame({"preset": ["imbalanced"] * 3 + ["complementary"] * 3, "bit": [0, 1, 2] * 2,
                       "utilisation": [0.26, 0.25, 0.37, 0.06, -0.06, 1.0]})
    fig = _valid(bit_utilisation_figure(df, "visual", "bits"))
    assert [t.name for t in fig.data] == ["imbalanced", "complementary"]
    assert list(fig.data[1].y) == [0.06, -0.06, 1.0] and fig.layout.yaxis.range[0] < -0.06
    assert fig.layout.annotations[0].text == "as alone 1.00"


def test_gap_histogram_threshold_is_drawn_whichever_component_is_balanced():
    """``balanced`` is the index of the balanced component, not a flag: the crossing is drawn for either."""
    from modalscope.dashboard import figures as F

    edges = np.linspace(-1, 1, 21)
    hist = {"edges": edges, "counts": np.ones(20), "name": "audio-visual", "epoch": 0, "split": "test"}
    for balanced in (0, 1):
        g = {"weights": [0.2, 0.8], "means": [-0.97, -0.02], "variances": [0.001, 0.1], "threshold": -0.86, "balanced": balanced}
        fig = _valid(F.gap_histogram_figure(hist, g))
        assert [s.x0 for s in fig.layout.shapes] == [-0.86]
