"""Figure builders: pure functions, DataFrame in, ``plotly.graph_objects.Figure`` out.

Every page draws through these, so the look is the same everywhere: one colour per
modality in every figure (audio, visual, text, fused...), titles with units, legends on
top, and long step series downsampled before they reach the browser (MinMaxLTTB: a
100 000-step series becomes ~2 000 points that keep its shape and its extremes).

Scalar frames use the store's long layout ``step, epoch, name, value``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

MODALITY_COLORS = {
    "audio": "#E4572E",
    "visual": "#2E86AB",
    "text": "#59A14F",
    "fused": "#2B2D42",
    "fusion": "#8E6C8A",
    "total": "#7F7F7F",
}
_PALETTE = ["#F2A541", "#17BECF", "#B07AA1", "#9C755F", "#EDC948", "#76B7B2", "#FF9DA7", "#BAB0AC"]
# Colours that mean something other than a modality (flags, thresholds, mixture components):
# never a modality's colour, so audio is always the same orange-red and visual the same blue.
ALERT = "#C0392B"
COMPONENT_COLORS = ["#8E6C8A", "#F2A541", "#17BECF"]
GROUP_PALETTE = ["#2E86AB", "#E4572E", "#59A14F", "#B07AA1", "#F2A541", "#17BECF", "#9C755F", "#2B2D42", "#EDC948", "#FF9DA7"]
MAX_POINTS = 2000
AXIS = {"showgrid": True, "gridcolor": "#ECEFF3", "zeroline": False, "linecolor": "#C9CED6", "ticks": "outside", "tickcolor": "#C9CED6"}
HEIGHT = 330


def modality_color(name: str) -> str:
    """Stable colour for a modality (or any series name): fixed for known ones, hashed otherwise."""
    key = str(name).rsplit("/", 1)[-1]
    if key in MODALITY_COLORS:
        return MODALITY_COLORS[key]
    return _PALETTE[sum(map(ord, key)) % len(_PALETTE)]


def group_color(i: int) -> str:
    return GROUP_PALETTE[i % len(GROUP_PALETTE)]


def _with_alpha(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _base_layout(title: str, x_title: str, y_title: str, height: int = HEIGHT) -> dict:
    return {
        "title": {"text": title, "x": 0.0, "xanchor": "left", "y": 0.985, "yanchor": "top", "yref": "container", "font": {"size": 15}},
        "height": height,
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "font": {"family": "Inter, Source Sans Pro, sans-serif", "size": 12, "color": "#2B2D42"},
        "margin": {"l": 60, "r": 20, "t": 84, "b": 48},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0.0, "font": {"size": 11}},
        "hovermode": "x unified",
        "xaxis": {"title": {"text": x_title}, **AXIS},
        "yaxis": {"title": {"text": y_title}, **AXIS},
    }


def _figure(traces: list[dict], layout: dict) -> go.Figure:
    """Build from plain dicts without per-property validation (10x faster; the unit tests
    validate every builder's output once with ``go.Figure(fig.to_dict())``)."""
    return go.Figure({"data": traces, "layout": layout}, _validate=False)


def _hline(layout: dict, y: float, color: str, text: str | None = None, yref: str = "y", inside: bool = False) -> None:
    """A dotted horizontal reference line; its label sits in the right margin, level with the
    line, so it never lies on a curve (``inside``: at the plot's right edge on a white patch,
    for figures whose right margin holds a second axis)."""
    layout.setdefault("shapes", []).append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": yref, "y0": y, "y1": y,
                                            "line": {"color": color, "dash": "dot", "width": 1}})
    if text:
        pos = {"x": 0.995, "xanchor": "right", "yanchor": "bottom", "bgcolor": "rgba(255,255,255,0.85)"} if inside else \
            {"x": 1.005, "xanchor": "left", "yanchor": "middle"}
        layout.setdefault("annotations", []).append({"xref": "paper", "yref": yref, "y": y, "text": text, "showarrow": False,
                                                     "font": {"size": 10, "color": color}, **pos})
        if not inside:
            layout["margin"]["r"] = max(layout["margin"].get("r", 20), 12 + 6 * len(text))


def _vline(layout: dict, x: float, color: str, text: str | None = None) -> None:
    layout.setdefault("shapes", []).append({"type": "line", "yref": "paper", "y0": 0, "y1": 1, "xref": "x", "x0": x, "x1": x,
                                            "line": {"color": color, "dash": "dot", "width": 1.5}})
    if text:
        layout.setdefault("annotations", []).append({"yref": "paper", "y": 1.0, "xref": "x", "x": x, "text": text, "showarrow": False,
                                                     "xanchor": "left", "yanchor": "top", "font": {"size": 10, "color": color}})


def _integer_ticks(layout: dict, n: int) -> None:
    """Epoch axes tick on whole epochs when there are few of them."""
    if n <= 20:
        layout["xaxis"]["dtick"] = 1


def empty_figure(title: str, message: str) -> go.Figure:
    lay = _base_layout(title, "", "")
    lay["xaxis"]["visible"] = False
    lay["yaxis"]["visible"] = False
    lay["annotations"] = [{"text": message, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper"}]
    return _figure([], lay)


# ---------------------------------------------------------------------------- series maths
def downsample_minmax(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ~``max_points`` points of a long series that still look like the whole of it.

    MinMaxLTTB (Van Der Donckt et al., "MinMaxLTTB: Leveraging MinMax-Preselection to Scale
    LTTB", 2023) through ``tsdownsample`` (Rust): the min and max of small buckets are
    preselected (``minmax_ratio=4``), then Largest-Triangle-Three-Buckets keeps the visually
    most significant point of each of ``max_points`` buckets. The first and last points and
    the global minimum and maximum are always kept, so a single spike is never lost (the
    output may have up to 2 points more than ``max_points``). Series with non-finite values,
    and installs without ``tsdownsample``, fall back to :func:`downsample_minmax_buckets`.
    Series already short enough are returned unchanged.
    """
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n <= max_points:
        return x, y
    try:
        from tsdownsample import MinMaxLTTBDownsampler
    except ImportError:  # pragma: no cover - tsdownsample is a dependency
        return downsample_minmax_buckets(x, y, max_points)
    if not np.isfinite(y).all() or not np.issubdtype(x.dtype, np.number) or (n > 1 and np.any(np.diff(x) < 0)):
        return downsample_minmax_buckets(x, y, max_points)
    idx = MinMaxLTTBDownsampler().downsample(x, y, n_out=max(3, max_points))
    idx = np.unique(np.concatenate([idx.astype(np.int64), [0, n - 1, int(np.argmin(y)), int(np.argmax(y))]]))
    return x[idx], y[idx]


def downsample_minmax_buckets(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Keep the minimum and the maximum of each of ``max_points // 2`` equal buckets, in x order
    (NaN-tolerant fallback of :func:`downsample_minmax`)."""
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n <= max_points:
        return x, y
    width = -(-n // max(1, max_points // 2 - 1))
    n_buckets = -(-n // width)
    mat = np.full(n_buckets * width, np.nan)
    mat[:n] = y
    mat = mat.reshape(n_buckets, width)
    valid = ~np.all(np.isnan(mat), axis=1)
    base = np.arange(n_buckets) * width
    lo = base + np.argmin(np.where(np.isnan(mat), np.inf, mat), axis=1)
    hi = base + np.argmax(np.where(np.isnan(mat), -np.inf, mat), axis=1)
    idx = np.unique(np.concatenate([lo[valid], hi[valid], [0, n - 1]]))
    return x[idx], y[idx]


def ema(v: Sequence[float], weight: float) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard/W&B): ``s_t = w·s_{t-1} + (1−w)·v_t``
    divided by ``1 − w^t`` so the first points are not pulled towards zero; ``weight`` in [0, 1).
    Non-finite values are skipped (they keep their place in time). pandas' ``ewm(adjust=True)``
    computes exactly this normalised sum, in compiled code."""
    v = np.asarray(v, dtype=np.float64)
    if weight <= 0 or len(v) == 0:
        return v.copy()
    finite = np.isfinite(v)
    out = pd.Series(np.where(finite, v, np.nan)).ewm(alpha=1.0 - weight, adjust=True, ignore_na=False).mean().to_numpy(copy=True)
    out[~finite] = np.nan
    return out


def conflict_label(name: str) -> str:
    """Legend words for the conflict cosines: ``conflict/cos/audio`` → what is compared, where."""
    parts = str(name).split("/")
    if len(parts) == 3 and parts[1] == "cos":
        return f"{parts[2]} encoder: fused loss vs {parts[2]}'s own loss"
    if parts[1:2] == ["cos_fusion"]:
        if len(parts) == 3:
            a, _, b = parts[2].partition("-")
            return f"fusion layer: {a}'s loss vs {b}'s loss"
        return "fusion layer: one modality's loss vs the other's"
    return name


def series_label(name: str, prefix: str | None = None) -> str:
    if prefix and name.startswith(prefix):
        return name[len(prefix) :] or name
    return name


def bucket_means(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(x, mean, n)`` per bucket of one series drawn from the store's bucket summary (points
    carrying ``bucket``, ``n`` and ``mean`` columns: ``modalscope.store.bucket_points``), x = the
    middle of the bucket's first and last logged step; None for a frame of plain rows.

    Smoothing and shares are computed from these exact means: the drawn points of a bucket are
    its extremes, whose average is not the bucket's average."""
    if "mean" not in g.columns or "bucket" not in g.columns or g.empty:
        return None
    g = g.sort_values("step", kind="stable")
    b, steps = g["bucket"].to_numpy(), g["step"].to_numpy(dtype=np.float64)
    start = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    mid = (steps[start] + np.maximum.reduceat(steps, start)) / 2
    return mid, g["mean"].to_numpy(dtype=np.float64)[start], g["n"].to_numpy(dtype=np.float64)[start]


def _smoothed(g: pd.DataFrame, x: str, xs: np.ndarray, ys: np.ndarray, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed line of one series: the debiased EMA of its values, or for a bucketed series
    (x = step) the EMA of its bucket means (one value per bucket, at the bucket's middle)."""
    bm = bucket_means(g) if x == "step" else None
    if bm is not None:
        return bm[0], ema(bm[1], smoothing)
    return xs, ema(ys, smoothing)


# ---------------------------------------------------------------------------- step series
def _line(x, y, name: str, color: str, width: float = 1.8, **kw) -> dict:
    return {"type": "scatter", "x": np.asarray(x), "y": np.asarray(y), "mode": "lines", "name": name,
            "line": {"color": color, "width": width}, **kw}


def scalar_lines(
    df: pd.DataFrame,
    title: str,
    y_title: str,
    x: str = "step",
    smoothing: float = 0.0,
    prefix: str | None = None,
    max_points: int = MAX_POINTS,
    y_log: bool = False,
    x_title: str | None = None,
    label_fn: "Callable[[str], str] | None" = None,
    y_range: list[float] | None = None,
) -> go.Figure:
    """One line per scalar name (coloured by modality), downsampled; with ``smoothing`` > 0 the
    raw series is drawn faint under its debiased EMA. ``label`` turns a series name into its
    legend text (default: the name without ``prefix``)."""
    if df is None or df.empty:
        return empty_figure(title, "no data yet")
    traces = []
    for name, g in df.groupby("name", sort=True):
        g = g.sort_values(x)
        xs = g[x].to_numpy()
        ys = g["value"].to_numpy(dtype=np.float64)
        label_ = series_label(str(name), prefix)
        color = modality_color(label_)
        label_text = label_fn(str(name)) if label_fn is not None else label_
        if smoothing > 0 and len(ys) > 2:
            xr, yr = downsample_minmax(xs, ys, max_points)
            traces.append(_line(xr, yr, f"{label_text} (raw)", _with_alpha(color, 0.22), 1.0, legendgroup=label_text, showlegend=False,
                                hoverinfo="skip"))
            xs2, ys2 = downsample_minmax(*_smoothed(g, x, xs, ys, smoothing), max_points)
            traces.append(_line(xs2, ys2, label_text, color, 2.0, legendgroup=label_text))
        else:
            xs2, ys2 = downsample_minmax(xs, ys, max_points)
            traces.append(_line(xs2, ys2, label_text, color))
    lay = _base_layout(title, x_title or x, y_title)
    if y_range is not None:
        lay["yaxis"]["range"] = list(y_range)
    if y_log:
        lay["yaxis"]["type"] = "log"
    elif y_range is None and (rng := flat_range(df["value"])) is not None:
        lay["yaxis"]["range"] = rng
    return _figure(traces, lay)


def accuracy_figure(df: pd.DataFrame, bayes: dict[str, float] | None = None, title: str = "Accuracy per epoch") -> go.Figure:
    """``acc/<split>/<series>`` per epoch: test solid, train dashed, valid dotted; colour by series.
    Bayes ceilings (when known) as thin dotted horizontal lines in the same colours."""
    if df is None or df.empty:
        return empty_figure(title, "no finished epoch yet")
    dash = {"test": "solid", "train": "dash", "valid": "dot"}
    parts = df["name"].str.split("/", n=2, expand=True)
    d = df.assign(split=parts[1], series=parts[2])
    traces = []
    for (split, series), g in d.groupby(["split", "series"], sort=True):
        g = g.sort_values("epoch")
        traces.append({"type": "scatter", "x": (g["epoch"] + 1).to_numpy(), "y": g["value"].to_numpy(),
                       "mode": "lines+markers" if len(g) < 60 else "lines", "name": f"{series} ({split})",
                       "line": {"color": modality_color(series), "dash": dash.get(split, "solid"), "width": 2}, "marker": {"size": 5}})
    lay = _base_layout(title, "epoch", "accuracy", height=360)
    lay["yaxis"]["range"] = [0, 1.02]
    lay["legend"].update({"entrywidth": 0.33, "entrywidthmode": "fraction", "font": {"size": 10}})
    _integer_ticks(lay, int(d["epoch"].max()) + 1)
    present = set(d["series"])
    x_end = int(d["epoch"].max()) + 1
    for series, v in (bayes or {}).items():
        if series in present:
            _hline(lay, float(v), modality_color(series))
            traces.append({"type": "scatter", "x": [1, x_end], "y": [float(v), float(v)], "mode": "lines", "hoverinfo": "name",
                           "name": f"{series} {float(v):.2f}", "legend": "legend2",
                           "line": {"color": modality_color(series), "dash": "dot", "width": 1.5}})
    if any(t.get("legend") == "legend2" for t in traces):  # the ceilings get their own titled legend in the right margin
        lay["legend2"] = {"title": {"text": "Bayes ceiling", "font": {"size": 10}}, "orientation": "v", "x": 1.02, "xanchor": "left",
                          "y": 1.0, "yanchor": "top", "font": {"size": 10}}
        lay["margin"]["r"] = 100
    lay["xaxis"]["range"] = [0.5, x_end + 0.5]
    return _figure(traces, lay)


def conflict_figure(df: pd.DataFrame, tau: float | None = None, max_points: int = MAX_POINTS, smoothing: float = 0.0) -> go.Figure:
    """Dominance ratio ``grad_ratio`` (log scale, left) and the share of flagged steps (bars, right)."""
    title = "Gradient dominance ratio and conflict flags"
    if df is None or df.empty or "grad_ratio" not in set(df["name"]):
        return empty_figure(title, "no gradient ratio logged")
    r = df[df["name"] == "grad_ratio"].sort_values("step")
    xs, ys = r["step"].to_numpy(), r["value"].to_numpy(dtype=np.float64)
    if smoothing > 0:
        xs, ys = _smoothed(r, "step", xs, ys, smoothing)
    x2, y2 = downsample_minmax(xs, ys, max_points)
    traces = [_line(x2, y2, "dominance ratio", "#2B2D42", 1.5)]
    f = df[df["name"] == "conflict/flag"].sort_values("step")
    if not f.empty:
        bm = bucket_means(f)  # a bucketed flag: each bucket's share of flagged steps, weighted by its rows
        f = f if bm is None else pd.DataFrame({"step": bm[0], "value": bm[1], "n": bm[2]})
        w = f["n"] if bm is not None else pd.Series(1.0, index=f.index)
        n_b = max(1, min(200, int(w.sum()) // 5))
        b = pd.cut(f["step"], bins=min(n_b, len(f)), labels=False)
        f = f.assign(w=w, wv=w * f["value"], ws=w * f["step"])
        frac = f.groupby(b).agg(w=("w", "sum"), wv=("wv", "sum"), ws=("ws", "sum"))
        frac = pd.DataFrame({"step": frac["ws"] / frac["w"], "flagged": frac["wv"] / frac["w"]})
        traces.append({"type": "bar", "x": frac["step"].to_numpy(), "y": frac["flagged"].to_numpy(), "name": "flagged steps (share)",
                       "marker": {"color": _with_alpha(ALERT, 0.25)}, "yaxis": "y2"})
    lay = _base_layout(title, "step", "‖g_dominant‖ / mean ‖g_other‖")
    lay["yaxis"]["type"] = "log"
    lay["yaxis2"] = {"title": {"text": "share of steps flagged"}, "overlaying": "y", "side": "right", "range": [0, 1], "showgrid": False,
                     "type": "linear", "tickmode": "linear", "tick0": 0, "dtick": 0.25, "tickformat": ".0%", "zeroline": False}
    lay["margin"]["r"] = 60
    if tau:
        _hline(lay, math.log10(tau), ALERT, f"τ = {tau:g}", yref="y", inside=True)
        lay["shapes"][-1]["y0"] = lay["shapes"][-1]["y1"] = tau
        lay["annotations"][-1]["y"] = math.log10(tau)
    return _figure(traces, lay)


# ---------------------------------------------------------------------------- modality gap
def gmm_density_curves(gmm: dict, edges: np.ndarray, total: float, n_points: int = 400) -> pd.DataFrame:
    """Expected counts per bin of each GMM component and of the mixture, on a fine grid.

    ``count_k(x) = N · w_k · [Φ((x + Δ/2 − μ_k)/σ_k) − Φ((x − Δ/2 − μ_k)/σ_k)]``: the expected
    number of the histogram's ``N`` samples from component k in a bin of width ``Δ`` centred
    at ``x``. At a bin centre it is exactly that bin's expected count, so the curves sit on
    the bars; for a wide component it equals ``N · Δ · w_k · 𝒩(x; μ_k, σ²_k)`` (the density
    scaled to counts), and for a component narrower than a bin it stays at most ``N · w_k``
    instead of rising above every bar, as the scaled density would. Each curve integrates
    (in units of bins) to ``N · w_k`` when the component lies inside the edges.
    """
    edges = np.asarray(edges, dtype=np.float64)
    width = float(np.mean(np.diff(edges)))
    xs = np.linspace(float(edges[0]), float(edges[-1]), n_points)
    erf = np.frompyfunc(math.erf, 1, 1)
    out = {"x": xs}
    mix = np.zeros_like(xs)
    for k, (w, mu, var) in enumerate(zip(gmm["weights"], gmm["means"], gmm["variances"])):
        s = math.sqrt(2 * max(float(var), 1e-24))
        hi = erf((xs + width / 2 - float(mu)) / s).astype(np.float64)
        lo = erf((xs - width / 2 - float(mu)) / s).astype(np.float64)
        count = total * float(w) * 0.5 * (hi - lo)
        out[f"component{k}"] = count
        mix += count
    out["mixture"] = mix
    return pd.DataFrame(out)


def gap_histogram_figure(hist: dict, gmm: dict | None = None, title: str | None = None, gap_label: str = "modality gap") -> go.Figure:
    """Per-sample modality-gap histogram over [-1, 1] with the fitted GMM components overlaid.

    ``hist``: ``{"edges", "counts", "name", "epoch", "split"}``; ``gmm``: a gmm row
    (``weights, means, variances, threshold, balanced``) or None.
    """
    edges = np.asarray(hist["edges"], dtype=np.float64)
    counts = np.asarray(hist["counts"], dtype=np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    name = hist.get("name", "gap")
    title = title or f"Modality gap {name} · epoch {int(hist.get('epoch', 0)) + 1} · {hist.get('split', '')} split"
    traces = [{"type": "bar", "x": centres, "y": counts, "width": np.diff(edges), "name": "samples",
               "marker": {"color": "#9DB4C0", "line": {"width": 0.5, "color": "white"}}}]
    lay = _base_layout(title, f"{gap_label} (confidence difference on the true class)", "samples", height=360)
    lay["hovermode"] = "closest"
    lay["bargap"] = 0
    lay["xaxis"]["range"] = [float(edges[0]), float(edges[-1])]
    if gmm is not None:
        curves = gmm_density_curves(gmm, edges, counts.sum())
        comp_cols = [c for c in curves.columns if c.startswith("component")]
        colors = COMPONENT_COLORS
        if len(comp_cols) > 1:
            for i, c in enumerate(comp_cols):
                traces.append({"type": "scatter", "x": curves["x"].to_numpy(), "y": curves[c].to_numpy(), "mode": "lines",
                               "name": f"GMM component {i + 1}", "line": {"color": colors[i % 3], "width": 1.5},
                               "fill": "tozeroy", "fillcolor": _with_alpha(colors[i % 3], 0.28)})
        traces.append({"type": "scatter", "x": curves["x"].to_numpy(), "y": curves["mixture"].to_numpy(), "mode": "lines",
                       "name": "GMM fit" if len(comp_cols) > 1 else "1-component fit", "line": {"color": "#2B2D42", "width": 2, "dash": "dot"}})
        thr = gmm.get("threshold")
        if thr is not None and np.isfinite(thr) and len(comp_cols) > 1:
            _vline(lay, float(thr), ALERT, f" threshold {float(thr):.2f}")
    return _figure(traces, lay)


def gap_heatmap_figure(hists: pd.DataFrame, title: str = "Gap distribution over epochs") -> go.Figure:
    """Epoch × gap heat map (share of samples per bin) from histogram rows of one series."""
    if hists is None or hists.empty:
        return empty_figure(title, "no histograms logged")
    hists = hists.sort_values("epoch")
    edges = np.asarray(hists["edges"].iloc[0], dtype=np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    z = []
    for c in hists["counts"]:
        c = np.asarray(c, dtype=np.float64)
        z.append(c / c.sum() if c.sum() > 0 else c)
    lay = _base_layout(title, "modality gap", "epoch", height=360)
    lay["hovermode"] = "closest"
    return _figure([{"type": "heatmap", "x": centres, "y": hists["epoch"].to_numpy() + 1, "z": np.array(z), "colorscale": [[0.0, "#FFFFFF"], [0.15, "#DCEBF5"], [1.0, "#0B4F6C"]],
                     "colorbar": {"title": {"text": "share"}}}], lay)


# ---------------------------------------------------------------------------- contributions
def _panels(n: int, gap: float = 0.06) -> list[list[float]]:
    w = (1 - gap * (n - 1)) / n
    return [[i * (w + gap), i * (w + gap) + w] for i in range(n)]


CONTRIB_PANELS = [("w", "W^m", "weight (sums to 1)"), ("info", "information I(m)", "Shapley value (nats)"),
                  ("confidence", "confidence D(m)", "true-class probability"), ("captum", "captum attribution", "loss rise when removed (nats)")]


def contributions_figure(df: pd.DataFrame, title: str = "Modality contribution W^m and its parts") -> go.Figure:
    """Side-by-side panels over epochs: W^m, Shapley information I(m), confidence D(m) (+ captum
    when present), each with its own y-axis title; the legend sits under the panels so it never
    covers their titles."""
    if df is None or df.empty:
        return empty_figure(title, "no contributions logged")
    cols = [c for c in CONTRIB_PANELS if c[0] != "captum" or ("captum" in df and df["captum"].notna().any())]
    lay = _base_layout(title, "epoch", "", height=360)
    lay["hovermode"] = "closest"
    lay["annotations"] = []
    lay["legend"] = {"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0.0, "font": {"size": 11}}
    traces = []
    for j, ((col, sub, unit), dom) in enumerate(zip(cols, _panels(len(cols), gap=0.08))):
        ax = "" if j == 0 else str(j + 1)
        lay[f"xaxis{ax}"] = {"domain": dom, "anchor": f"y{ax}", "title": {"text": "epoch"}, **AXIS}
        lay[f"yaxis{ax}"] = {"anchor": f"x{ax}", "title": {"text": unit, "standoff": 2, "font": {"size": 11}}, **AXIS}
        lay["annotations"].append({"text": f"<b>{sub}</b>", "x": (dom[0] + dom[1]) / 2, "y": 1.02, "xref": "paper", "yref": "paper",
                                   "showarrow": False, "xanchor": "center", "yanchor": "bottom", "font": {"size": 12}})
        for m, g in df.groupby("modality", sort=True):
            g = g.sort_values("epoch")
            traces.append({"type": "scatter", "x": (g["epoch"] + 1).to_numpy(), "y": g[col].to_numpy(), "mode": "lines+markers",
                           "name": str(m), "legendgroup": str(m), "showlegend": j == 0, "xaxis": f"x{ax}", "yaxis": f"y{ax}",
                           "line": {"color": modality_color(str(m)), "width": 2}, "marker": {"size": 4}})
    lay["margin"].update({"t": 70, "b": 105, "l": 50})
    return _figure(traces, lay)


# ---------------------------------------------------------------------------- comparison
def band_stats(df: pd.DataFrame, x: str = "step") -> pd.DataFrame:
    """Per group and x: mean, population std and count over the runs that have a value there."""
    g = df.groupby(["group", x])["value"]
    out = g.agg(mean="mean", count="count").reset_index()
    out["std"] = g.std(ddof=0).to_numpy()
    return out


def band_figure(df: pd.DataFrame, title: str, y_title: str, x: str = "step", x_title: str | None = None,
                max_points: int = MAX_POINTS, smoothing: float = 0.0) -> go.Figure:
    """Mean ± std band over the runs (seeds) of each group.

    ``df``: ``group, run, <x>, value``. Runs are aligned on ``x``; at each x the mean and
    the population standard deviation over the runs that have it are drawn.
    """
    if df is None or df.empty:
        return empty_figure(title, "no data for this metric")
    traces = []
    if smoothing > 0:
        df = df.sort_values(["run", x]).copy()
        df["value"] = df.groupby("run")["value"].transform(lambda s: ema(s.to_numpy(), smoothing))
    stats = band_stats(df, x)
    nruns = df.groupby("group")["run"].nunique()
    for i, (grp, st) in enumerate(stats.groupby("group", sort=True)):
        color = group_color(i)
        st = st.sort_values(x)
        if len(st) > max_points:
            st = st.iloc[np.unique(np.linspace(0, len(st) - 1, max_points).astype(int))]
        xs = st[x].to_numpy() + (1 if x == "epoch" else 0)
        mean, std = st["mean"].to_numpy(), np.nan_to_num(st["std"].to_numpy())
        n = int(nruns.get(grp, 1))
        if n > 1:
            traces.append({"type": "scatter", "x": np.concatenate([xs, xs[::-1]]), "y": np.concatenate([mean + std, (mean - std)[::-1]]),
                           "fill": "toself", "fillcolor": _with_alpha(color, 0.18), "line": {"width": 0}, "hoverinfo": "skip",
                           "name": f"{grp} ± std", "legendgroup": str(grp), "showlegend": False})
        traces.append({"type": "scatter", "x": xs, "y": mean, "mode": "lines", "name": f"{grp} (n={n})", "legendgroup": str(grp),
                       "line": {"color": color, "width": 2}})
    lay = _base_layout(title, x_title or x, y_title)
    if x == "epoch":
        _integer_ticks(lay, int(df["epoch"].max()) + 1)
    lay["legend"] = {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1.0}
    lay["margin"]["r"] = 10
    return _figure(traces, lay)


def parallel_coords_figure(df: pd.DataFrame, dims: list[str], color: str = "acc_fused", title: str = "Swept fields vs final accuracy") -> go.Figure:
    """Parallel coordinates: one axis per swept field (categoricals get ticks) and the metric last."""
    if df is None or df.empty or not dims:
        return empty_figure(title, "no swept fields")
    axes = []
    for d in dims + [color]:
        col = df[d]
        num = pd.to_numeric(col, errors="coerce")
        if num.notna().all():
            axes.append({"label": d, "values": num.to_numpy()})
        else:
            cats = sorted(col.astype(str).unique())
            codes = col.astype(str).map({c: i for i, c in enumerate(cats)})
            axes.append({"label": d, "values": codes.to_numpy(), "tickvals": list(range(len(cats))), "ticktext": cats})
    cvals = pd.to_numeric(df[color], errors="coerce").to_numpy()
    lay = {"title": {"text": title, "x": 0.0, "font": {"size": 15}}, "paper_bgcolor": "white", "height": 380,
           "margin": {"l": 70, "r": 50, "t": 90, "b": 30}}
    return _figure([{"type": "parcoords", "dimensions": axes,
                     "line": {"color": cvals, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": {"text": color}}}}], lay)


def final_bars_figure(df: pd.DataFrame, metrics: list[str], title: str = "Final test accuracy", group: str = "group") -> go.Figure:
    """Grouped bars: one bar group per run group, one bar per metric (mean ± std over seeds).

    ``df``: one row per run with ``group`` and the metric columns (e.g. ``acc_fused``)."""
    if df is None or df.empty:
        return empty_figure(title, "no runs")
    agg = df.groupby(group, observed=True)[metrics].agg(["mean", "std"])
    traces = []
    for m in metrics:
        label = m.replace("acc_", "")
        traces.append({"type": "bar", "x": agg.index.astype(str).to_numpy(), "y": agg[(m, "mean")].to_numpy(), "name": label,
                       "marker": {"color": modality_color(label)},
                       "error_y": {"type": "data", "array": agg[(m, "std")].fillna(0).to_numpy(), "visible": True}})
    lay = _base_layout(title, "", "test accuracy")
    lay["barmode"] = "group"
    lay["hovermode"] = "closest"
    lay["yaxis"]["range"] = [0, 1]
    return _figure(traces, lay)


def ceilings_figure(bayes: dict[str, float], title: str = "What each input can achieve (Bayes ceiling)") -> go.Figure:
    keys = list(bayes)
    lay = _base_layout(title, "input", "best possible accuracy")
    lay["yaxis"]["range"] = [0, 1.08]
    lay["hovermode"] = "closest"
    lay["showlegend"] = False
    return _figure([{"type": "bar", "x": keys, "y": [bayes[k] for k in keys], "marker": {"color": [modality_color(k) for k in keys]},
                     "text": [f"{bayes[k]:.2f}" for k in keys], "textposition": "outside", "name": "Bayes ceiling"}], lay)

def figure_to_html(fig: go.Figure) -> bytes:
    """Self-contained HTML (plotly.js embedded: works offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")


def figure_to_image(fig: go.Figure, fmt: str = "png") -> bytes | None:
    """PNG/SVG through kaleido when it can run here (it needs a local Chromium); else None."""
    try:
        return fig.to_image(format=fmt, width=1100, height=int(fig.layout.height or HEIGHT) + 40)
    except Exception:  # noqa: BLE001 - export is optional; the caller offers HTML instead
        return None


def names_with_prefix(names: Iterable[str], prefix: str) -> list[str]:
    return sorted(n for n in names if n.startswith(prefix))


# ---------------------------------------------------------------------------- method panels
def flat_range(values: Sequence[float]) -> list[float] | None:
    """A y range for a (nearly) constant series, so plotly does not stretch it over −1…1:
    ±10 % around the value (±0.1 around 0). None when the series varies."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    if hi - lo > 1e-9 * max(1.0, abs(hi)):
        return None
    pad = 0.1 * abs(lo) if lo != 0 else 0.1
    return [lo - pad, lo + pad]


def method_panel_figure(df: pd.DataFrame, panel, x: str = "step", smoothing: float = 0.0, max_points: int = MAX_POINTS) -> go.Figure:
    """Draw one :class:`modalscope.methods.base.Panel` a method declares: its series (labelled by the
    panel, coloured by modality when the label is one, else by position), its unit on the y
    axis, its y range and its reference line. The panel's one-sentence reading is the page's
    caption, not part of the figure."""
    names = panel.matches(set(df["name"])) if df is not None and not df.empty else []
    if not names:
        return empty_figure(panel.title, "not logged yet")
    traces = []
    for i, n in enumerate(names):
        g = df[df["name"] == n].sort_values(x)
        label = panel.label(n)
        color = MODALITY_COLORS.get(label, _PALETTE[i % len(_PALETTE)])
        xs, ys = g[x].to_numpy(), g["value"].to_numpy(dtype=np.float64)
        line_kw = {"line": {"color": color, "width": 2, "shape": panel.shape}}
        if smoothing > 0 and len(ys) > 2 and panel.shape == "linear":
            xr, yr = downsample_minmax(xs, ys, max_points)
            traces.append(_line(xr, yr, f"{label} (raw)", _with_alpha(color, 0.22), 1.0, legendgroup=label, showlegend=False,
                                hoverinfo="skip"))
            xs, ys = _smoothed(g, x, xs, ys, smoothing)
        x2, y2 = downsample_minmax(xs, ys, max_points)
        tr = _line(x2, y2, label, color, 2.0, legendgroup=label)
        tr.update(line_kw)
        if len(x2) < 40:
            tr["mode"] = "lines+markers"
            tr["marker"] = {"size": 5, "color": color}
        traces.append(tr)
    lay = _base_layout(panel.title, x, panel.unit)
    if panel.log_y:
        lay["yaxis"]["type"] = "log"
    if panel.y_range is not None:
        lay["yaxis"]["range"] = list(panel.y_range)
    elif not panel.log_y:
        rng = flat_range(df[df["name"].isin(names)]["value"])
        if rng is not None:
            lay["yaxis"]["range"] = rng
    if panel.ref_line is not None:
        ref = float(panel.ref_line)
        _hline(lay, ref, "#6C757D", panel.ref_label or f"{ref:g}")
        if panel.log_y:
            lay["annotations"][-1]["y"] = math.log10(ref) if ref > 0 else 0
    return _figure(traces, lay)


# ---------------------------------------------------------------------------- robustness
def robustness_figure(df: pd.DataFrame, kind: str, clean: float | None = None) -> go.Figure:
    """Test accuracy when one modality is corrupted (``robust/<m>/<kind>/<level>`` scalars).

    A kind with one level per modality (``blank``) is a bar per modality; graded kinds
    (``noise``) are lines with markers that start at level 0 from the clean accuracy. The
    clean accuracy (``robust/clean``) is the dotted reference line in both.
    """
    title = f"Accuracy under {kind} corruption of one modality"
    if df is None or df.empty:
        return empty_figure(title, "no robustness evaluation stored")
    df = df.drop_duplicates("name", keep="last")  # a run extended by --resume evaluates again at its new end
    parts = df["name"].str.split("/", expand=True)
    d = df.assign(modality=parts[1], kind=parts[2], level=pd.to_numeric(parts[3], errors="coerce"))
    d = d[d["kind"] == kind].sort_values(["modality", "level"])
    if d.empty:
        return empty_figure(title, f"no {kind} corruption stored")
    graded = d.groupby("modality")["level"].nunique().max() > 1
    traces = []
    if graded:
        for m, g in d.groupby("modality", sort=True):
            xs, ys = g["level"].to_numpy(dtype=float), g["value"].to_numpy(dtype=float)
            if clean is not None and xs.min() > 0:
                xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[clean], ys])
            traces.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines+markers", "name": str(m),
                           "line": {"color": modality_color(str(m)), "width": 2}, "marker": {"size": 8, "color": modality_color(str(m))}})
        lay = _base_layout(title, f"{kind} level (0 = clean)", "test accuracy")
    else:
        mods = [str(m) for m in d["modality"]]
        vals = d["value"].to_numpy(dtype=float)
        traces.append({"type": "bar", "x": [f"{m} {kind}ed" if kind == "blank" else m for m in mods], "y": vals, "name": "accuracy",
                       "marker": {"color": [modality_color(m) for m in mods]}, "text": [f"{v:.2f}" for v in vals],
                       "textposition": "outside", "showlegend": False})
        lay = _base_layout(title, "corrupted modality", "test accuracy")
        lay["hovermode"] = "closest"
    lay["yaxis"]["range"] = [0, 1.08]
    if clean is not None:
        _hline(lay, float(clean), "#2B2D42", f"clean {clean:.2f}")
    return _figure(traces, lay)


# ---------------------------------------------------------------------------- probes
def probe_figure(df: pd.DataFrame, init: dict[str, float] | None = None, alone: dict[str, float] | None = None,
                 title: str = "Linear probe on each frozen encoder (test)") -> go.Figure:
    """``probe/test/<m>`` per epoch: how much a linear classifier can read from each encoder's
    features. Dotted: the probe at initialisation (``probe_init``); dashed: the level the same
    encoder reaches trained alone, when known. Utilisation = how far the probe got from the
    first toward the second."""
    if df is None or df.empty:
        return empty_figure(title, "no probe logged")
    traces = []
    lay = _base_layout(title, "epoch", "probe accuracy")
    for name, g in df.groupby("name", sort=True):
        m = str(name).rsplit("/", 1)[-1]
        g = g.sort_values("epoch")
        color = modality_color(m)
        traces.append({"type": "scatter", "x": (g["epoch"] + 1).to_numpy(), "y": g["value"].to_numpy(), "mode": "lines+markers",
                       "name": f"{m} probe", "line": {"color": color, "width": 2}, "marker": {"size": 5}})
        x_end = int(g["epoch"].max()) + 1
        for ref, dash, what in (((init or {}).get(m), "dot", "at init"), ((alone or {}).get(m), "dash", "trained alone")):
            if ref is not None:
                traces.append({"type": "scatter", "x": [1, x_end], "y": [float(ref), float(ref)], "mode": "lines",
                               "name": f"{m} {what} {float(ref):.2f}", "line": {"color": color, "dash": dash, "width": 1}})
    _integer_ticks(lay, int(df["epoch"].max()) + 1)
    return _figure(traces, lay)
