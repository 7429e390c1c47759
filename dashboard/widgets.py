"""Small UI pieces shared by the pages (status badges, durations, figure/data downloads)."""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from modalscope.dashboard import figures as F

STATUS_ICONS = {"running": "● running", "finished": "✓ finished", "failed": "✗ failed", "interrupted": "‖ interrupted",
                "unreadable": "! unreadable", "starting": "… starting"}


def status_badge(status: str) -> str:
    return STATUS_ICONS.get(str(status), str(status))


def fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "—"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def heartbeat_text(hb, now: float) -> str:
    try:
        return f"♥ {fmt_seconds(max(0.0, now - float(hb)))} ago"
    except (TypeError, ValueError):
        return ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "figure"


def chart(fig: go.Figure, key: str, data: pd.DataFrame | None = None, name: str | None = None, downloads: bool = True) -> None:
    """Plot a figure; under it, downloads of the figure (HTML, works offline; PNG on request) and its data (CSV)."""
    st.plotly_chart(fig, key=key, config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}})
    if not downloads:
        return
    base = _slug(name or key)
    with st.popover("Export", icon=":material/download:"):
        st.download_button("Figure (HTML, interactive, offline)", lambda: F.figure_to_html(fig), file_name=f"{base}.html",
                           mime="text/html", key=f"{key}.html", on_click="ignore")
        if data is not None and not data.empty:
            csv = data.drop(columns=[c for c in ("edges", "counts") if c in data and data[c].dtype == object], errors="ignore")
            st.download_button("Data (CSV)", lambda: csv.to_csv(index=False).encode(), file_name=f"{base}.csv", mime="text/csv",
                               key=f"{key}.csv", on_click="ignore")
        c1, c2 = st.columns(2)
        for col, fmt, mime in ((c1, "png", "image/png"), (c2, "svg", "image/svg+xml")):
            if col.button(f"Render {fmt.upper()}", key=f"{key}.{fmt}btn", help="Static image through plotly's exporter (kaleido; needs a local Chromium; a few seconds)."):
                img = F.figure_to_image(fig, fmt)
                if img is None:
                    st.caption(f"{fmt.upper()} export is unavailable here; use the HTML download or the chart's camera icon.")
                else:
                    st.download_button(f"Save {fmt.upper()}", img, file_name=f"{base}.{fmt}", mime=mime, key=f"{key}.{fmt}")


def missing(what: str, why: str) -> None:
    """One line saying a panel is hidden because the run lacks its data, and why."""
    st.caption(f"_{what}: not in this run — {why}_")
