"""Method panels: every method that modulates training declares how to read its signals.

Each declared panel is drawn from the series a real (gallery) run of that method logged: it
must find them, show them with the declared labels and unit, and draw the reference line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

import modalscope.methods  # noqa: F401 - registers the methods
from modalscope.methods.base import _REGISTRY, Panel
from modalscope.store import open_run
from modalscope.dashboard import figures as F

GALLERY = Path(__file__).resolve().parent.parent / "sample_runs"
# Methods whose step equals joint's (or one encoder's): nothing of their own to read.
NO_SIGNALS = {"joint", "unimodal", "ensemble"}


def test_every_modulating_method_declares_panels():
    for name, cls in _REGISTRY.items():
        if name in NO_SIGNALS:
            continue
        assert cls.panels, f"method {name} declares no dashboard panels"
        for p in cls.panels:
            assert isinstance(p, Panel) and p.title and p.unit and p.reading.endswith("."), (name, p.title)


def test_panel_matching_and_labels():
    p = Panel("k", ("ogm/coeff/*", "ogm/ratio"), "k", "r.", labels=(("ogm/ratio", "ρ"),))
    names = ["ogm/ratio", "ogm/coeff/visual", "ogm/coeff/audio", "ogm/score/audio"]
    assert p.matches(names) == ["ogm/coeff/audio", "ogm/coeff/visual", "ogm/ratio"]
    assert [p.label(n) for n in p.matches(names)] == ["audio", "visual", "ρ"]


@pytest.mark.parametrize("method", sorted(n for n, c in _REGISTRY.items() if c.panels))
def test_declared_panels_draw_a_real_runs_signals(method):
    run = GALLERY / f"{method}_imbalanced_s0"
    assert run.is_dir(), f"no gallery run {run.name} to check {method}'s panels against"
    rd = open_run(run)
    names = rd.scalar_names()
    for panel in _REGISTRY[method].panels:
        drawn = panel.matches(names)
        assert drawn, f"{method}: panel {panel.title!r} matches none of the logged series"
        df = rd.scalars(names=drawn)
        fig = F.method_panel_figure(df, panel)
        go.Figure(fig.to_dict())
        shown = [t.name for t in fig.data if t.showlegend is not False]
        assert shown == [panel.label(n) for n in drawn] and len(set(shown)) == len(shown)
        for t, n in zip([t for t in fig.data if t.showlegend is not False], drawn):
            assert len(t.x) == len(df[df["name"] == n])  # gallery series are short: every point drawn
        assert fig.layout.yaxis.title.text == panel.unit and fig.layout.title.text == panel.title
        if panel.y_range is not None:
            assert tuple(fig.layout.yaxis.range) == panel.y_range
        if panel.ref_line is not None:
            assert [s.y0 for s in fig.layout.shapes] == [panel.ref_line]
            assert fig.layout.annotations[-1].text == (panel.ref_label or f"{panel.ref_line:g}")
        else:
            assert not fig.layout.shapes


def test_ogm_coefficients_sit_on_their_own_unit_interval():
    """The issue's case: kₘ ∈ [0, 1] must not share an axis with scores around 30."""
    ogm = _REGISTRY["ogm_ge"].panels
    coeff = next(p for p in ogm if "ogm/coeff/*" in p.series)
    assert coeff.y_range == (0.0, 1.05) and coeff.ref_line == 1.0
    assert not any("ogm/score/*" in p.series for p in ogm if p is coeff)
    ratio = next(p for p in ogm if "ogm/ratio" in p.series)
    assert ratio.ref_line == 1.0


def test_constant_series_is_not_stretched_over_minus_one_to_one():
    df = pd.DataFrame({"step": range(5), "epoch": range(5), "name": "lr", "value": 0.05})
    fig = F.scalar_lines(df, "Learning rate", "lr", x="epoch")
    assert list(fig.layout.yaxis.range) == pytest.approx([0.045, 0.055])
    varying = F.scalar_lines(df.assign(value=[0.05, 0.04, 0.03, 0.02, 0.01]), "lr", "lr", x="epoch")
    assert varying.layout.yaxis.range is None
