"""Comparison figures: final accuracy bars against reference levels (pure: frames in, Figure out).

A bar means little without the levels it should be read against: the Bayes ceiling (the best any
model can do on this data) and each modality trained alone (what its encoder reaches when nothing
competes with it). Both are drawn as labelled horizontal lines in the modality's colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from modalscope.dashboard import figures as F


@dataclass(frozen=True)
class Level:
    """A horizontal reference line: ``label`` is shown next to it, ``key`` picks its colour."""

    label: str
    y: float
    key: str = "fused"
    dash: str = "dot"


def add_levels(fig: go.Figure, levels: list[Level], left: bool = False) -> go.Figure:
    """Draw ``levels`` as dotted lines across the plot; labels sit at the right end (``left``: the
    left end) and labels of close levels are staggered along x so they do not overlap. Returns
    ``fig`` (modified in place)."""
    levels = sorted((lv for lv in levels if lv.y == lv.y), key=lambda lv: lv.y)
    prev_y, slot = None, 0
    for lv in levels:
        slot = slot + 1 if prev_y is not None and abs(lv.y - prev_y) < 0.04 else 0
        prev_y = lv.y
        color = F.modality_color(lv.key)
        fig.add_shape(type="line", xref="paper", x0=0, x1=1, yref="y", y0=lv.y, y1=lv.y,
                      line={"color": color, "dash": lv.dash, "width": 1.5}, name=lv.label)
        x = 0.22 * (slot % 4) if left else 1 - 0.22 * (slot % 4)
        fig.add_annotation(xref="paper", x=x, y=lv.y, yref="y", text=f"{lv.label} {lv.y:.2f}", showarrow=False,
                           xanchor="left" if left else "right", yanchor="bottom", font={"size": 10, "color": color}, bgcolor="rgba(255,255,255,0.75)")
    return fig


def levels_bars_figure(df: pd.DataFrame, metrics: list[str], levels: list[Level], title: str = "Final test accuracy",
                       group: str = "group") -> go.Figure:
    """Grouped bars (mean ± std over the runs of each group, one bar per metric) with reference levels."""
    fig = F.final_bars_figure(df, metrics, title=title, group=group)
    if df is None or df.empty:
        return fig
    return add_levels(fig, levels)
