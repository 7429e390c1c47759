"""Figures of the Learn walk-through (pure: frames in, Figure out), in the shared modality colours.

Every series that belongs to a modality is drawn in ``figures.modality_color`` of that modality,
on every step, so *visual* is the same colour on the unimodal curves, the joint heads, the
gradient shares and the probe bars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from modalscope.dashboard import figures as F
from modalscope.dashboard.figures_compare import Level, add_levels

NEUTRAL = "#9AA5B1"


def modality_bands(df: pd.DataFrame, colors: dict[str, str], title: str, y_title: str, x: str = "epoch") -> go.Figure:
    """``figures.band_figure`` (mean ± std over runs per group) with each group drawn in the colour of
    the modality it stands for (``colors``: group → modality name)."""
    fig = F.band_figure(df, title, y_title, x=x)
    for tr in fig.data:
        key = colors.get(str(tr.legendgroup))
        if key is None:
            continue
        c = F.modality_color(key)
        if tr.fill == "toself":
            tr.fillcolor = F._with_alpha(c, 0.18)
        else:
            tr.line.color = c
    return fig


def probe_bars_figure(df: pd.DataFrame, modality: str, levels: list[Level], title: str) -> go.Figure:
    """One bar per training condition: the ``modality`` encoder's linear-probe test accuracy
    (``label, mean, std, n``), drawn in the modality's colour, with reference ``levels``
    (e.g. at initialisation, trained alone)."""
    if df is None or df.empty:
        return F.empty_figure(title, "no probe logged")
    c = F.modality_color(modality)
    trace = {"type": "bar", "x": df["label"].astype(str).to_numpy(), "y": df["mean"].to_numpy(dtype=float), "name": f"{modality} probe",
             "marker": {"color": c}, "error_y": {"type": "data", "array": np.nan_to_num(df["std"].to_numpy(dtype=float)), "visible": True},
             "text": [f"{v:.2f}" for v in df["mean"]], "textposition": "outside"}
    lay = F._base_layout(title, "", f"{modality} probe accuracy (test)")
    lay["yaxis"]["range"] = [0, 1.05]
    lay["hovermode"] = "closest"
    lay["showlegend"] = False
    return add_levels(F._figure([trace], lay), levels)


def shortfall_figure(df: pd.DataFrame, modality: str, title: str) -> go.Figure:
    """Head accuracy vs encoder probe, inside the joint model and trained alone, per preset.

    ``df``: ``preset, measure, value`` with measure in ``head (joint)``, ``head (alone)``,
    ``probe (joint)``, ``probe (alone)``. Heads are solid, probes hatched; joint in the modality
    colour, alone in grey."""
    if df is None or df.empty:
        return F.empty_figure(title, "no runs")
    traces = []
    for measure in ["head (joint)", "head (alone)", "probe (joint)", "probe (alone)"]:
        g = df[df["measure"] == measure]
        if g.empty:
            continue
        color = F.modality_color(modality) if "joint" in measure else NEUTRAL
        traces.append({"type": "bar", "x": g["preset"].astype(str).to_numpy(), "y": g["value"].to_numpy(dtype=float), "name": f"{modality} {measure}",
                       "marker": {"color": color, "pattern": {"shape": "/" if measure.startswith("probe") else ""}},
                       "text": [f"{v:.2f}" for v in g["value"]], "textposition": "outside"})
    lay = F._base_layout(title, "preset", "test accuracy")
    lay["barmode"] = "group"
    lay["yaxis"]["range"] = [0, 1.08]
    lay["hovermode"] = "closest"
    return F._figure(traces, lay)


def bit_utilisation_figure(df: pd.DataFrame, modality: str, title: str) -> go.Figure:
    """Per latent bit, the ``modality`` encoder's utilisation under joint training, one bar group per
    preset (``preset, bit, utilisation``): a bit at 1 is learnt as well as alone, at 0 not at all.
    Specialisation shows as one bit near 1 and the rest near 0; suppression as every bit low."""
    if df is None or df.empty:
        return F.empty_figure(title, "no per-bit probes logged")
    c = F.modality_color(modality)
    patterns = ["", "x", "/", "."]
    traces = []
    for i, (preset, g) in enumerate(df.groupby("preset", sort=False)):
        g = g.sort_values("bit")
        traces.append({"type": "bar", "x": [f"bit {int(b)}" for b in g["bit"]], "y": g["utilisation"].to_numpy(dtype=float), "name": str(preset),
                       "marker": {"color": F._with_alpha(c, 1.0 if i == 0 else 0.55), "pattern": {"shape": patterns[i % len(patterns)]}},
                       "text": [f"{v:.2f}" for v in g["utilisation"]], "textposition": "outside"})
    lay = F._base_layout(title, "latent bit of the class code", f"{modality} per-bit utilisation")
    lay["barmode"] = "group"
    lay["hovermode"] = "closest"
    lay["yaxis"]["range"] = [min(-0.1, float(df["utilisation"].min()) - 0.1), 1.2]
    return add_levels(F._figure(traces, lay), [Level("as alone", 1.0, "total")], left=True)
