"""Compare: runs or whole groups (method × seeds, sweeps) side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import figures as F
from dashboard import queries as q
from dashboard import summaries as S
from dashboard.widgets import chart

MAX_BINS = 400

st.title("Compare")
st.caption("Overlay runs or groups of runs (mean ± std over seeds), compare final metrics against the Bayes ceiling, and look at gap histograms side by side.")

runs = q.runs_table()
if runs.empty:
    st.info("No runs to compare yet.")
    st.stop()
cfgs = q.configs(runs)
swept = S.swept_fields(cfgs.values())
runs = S.add_config_columns(runs, cfgs, swept)
labels = dict(zip(runs["key"], runs["name"] + " (" + runs["source"] + ")"))

by_options = ["method", "preset", "dataset", "sweep"] + swept
default_by = ["method", "preset"]
c1, c2 = st.columns([1, 2])
by = c1.multiselect("Group by", by_options, default=[b for b in default_by if b in by_options], key="compare.by",
                    help="Runs equal on these fields form a group (their seeds give the ± std).")
runs = runs.assign(group=S.group_labels(runs, by))
mode = c2.radio("Pick", ["runs", "groups"], index=0 if st.session_state.get("compare.selected") else 1, horizontal=True, key="compare.mode")
if mode == "runs":
    default = [k for k in st.session_state.get("compare.selected", []) if k in labels] or list(runs["key"][:2])
    chosen = st.multiselect("Runs", list(runs["key"]), default=default, format_func=lambda k: labels[k], key="compare.runs")
    sel = runs[runs["key"].isin(chosen)]
else:
    groups = sorted(runs["group"].unique())
    teaching = [g for g in (f"{m} · imbalanced" for m in ("joint", "ogm_ge", "unimodal:visual")) if g in groups]
    chosen_groups = st.multiselect("Groups", groups, default=teaching or groups[: min(3, len(groups))], key="compare.groups")
    sel = runs[runs["group"].isin(chosen_groups)]
if sel.empty:
    st.info("Pick at least one run or group.")
    st.stop()

# ---------------------------------------------------------------- final metrics
st.subheader("Final metrics")
sel = sel.copy()
sel["bayes_fused"] = [((q.meta(k).get("reference") or {}).get("bayes") or {}).get("fused", np.nan) for k in sel["key"]]
sel["wall_s"] = pd.to_numeric(sel["end_time"], errors="coerce") - pd.to_numeric(sel["start_time"], errors="coerce")
fin = S.final_metrics_table(sel)
st.dataframe(S.format_mean_std(fin), hide_index=True, key="compare.final")
st.caption("Test accuracy at the last epoch (mean ± std over the runs of a group); gap_to_bayes = Bayes-optimal fused accuracy − fused accuracy; wall_s = training wall time in seconds.")
d1, d2 = st.columns([1, 5])
d1.download_button("CSV", fin.to_csv(index=False).encode(), file_name="final_metrics.csv", mime="text/csv", icon=":material/download:", key="compare.final.csv", on_click="ignore")
acc_cols = ["acc_fused"] + sorted(c for c in sel.columns if c.startswith("acc_") and c != "acc_fused" and sel[c].notna().any())
acc_cols = [c for c in acc_cols if c in sel]
if acc_cols:
    chart(F.final_bars_figure(sel, acc_cols), "compare.bars", sel[["name", "group"] + acc_cols], "final_accuracy")

# ---------------------------------------------------------------- curves
st.subheader("Curves")
names = sorted(set().union(*[set(q.scalar_names(k)) for k in sel["key"]]))
if names:
    default_metric = "acc/test/fused" if "acc/test/fused" in names else names[0]
    m1, m2, m3 = st.columns([2, 1, 1])
    metric = m1.selectbox("Metric", names, index=names.index(default_metric), key="compare.metric")
    frames = []
    for k, grp in zip(sel["key"], sel["group"]):
        every = q.stride(k)
        df = q.scalars(k, names=[metric], every=every)
        if every > 1 and len(df) < 200:  # a per-epoch metric: its steps need not be multiples of the stride
            df = q.scalars(k, names=[metric])
        if df.empty:
            continue
        frames.append(df.assign(run=k, group=grp))
    long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "group", "step", "epoch", "value"])
    per_epoch = not long.empty and long.groupby("run")["step"].nunique().max() <= long.groupby("run")["epoch"].nunique().max()
    x = "epoch" if per_epoch else "step"
    smoothing = m2.slider("Smoothing", 0.0, 0.99, 0.0 if per_epoch else 0.6, 0.01, key="compare.smooth")
    if x == "step" and not long.empty:
        hi = long["step"].max()
        width = max(1, int(np.ceil((hi + 1) / MAX_BINS)))
        long = long.assign(step=(long["step"] // width) * width).groupby(["group", "run", "step"], as_index=False)["value"].mean()
    chart(F.band_figure(long, f"{metric} (mean ± std per group)", metric, x=x, smoothing=smoothing), "compare.curve",
          long, metric.replace("/", "_"))
else:
    st.caption("_Curves: the selected runs have no scalars yet._")

# ---------------------------------------------------------------- histograms
st.subheader("Modality-gap histograms side by side")
hist_runs = [(k, q.table(k, "histograms")) for k in sel["key"][:8]]
hist_runs = [(k, h) for k, h in hist_runs if h is not None and not h.empty]
if not hist_runs:
    st.caption("_Gap histograms: none of the selected runs logged them (diagnostics.gap off, or unimodal runs)._")
else:
    max_ep = max(int(h["epoch"].max()) for _, h in hist_runs)
    h1, h2 = st.columns([3, 1])
    ep = h1.slider("Epoch", 1, max_ep + 1, max_ep + 1, key="compare.hist.epoch") - 1
    split = h2.selectbox("Split", ["test", "train", "valid"], key="compare.hist.split")
    cols = st.columns(min(3, len(hist_runs)))
    for i, (k, h) in enumerate(hist_runs):
        hh = h[(h["split"] == split)]
        if hh.empty:
            cols[i % len(cols)].caption(f"{labels[k]}: no {split} histogram")
            continue
        name = sorted(hh["name"].unique())[0]
        hh = hh[hh["name"] == name]
        avail = hh[hh["epoch"] <= ep]
        row = (avail if not avail.empty else hh).iloc[-1]
        g = q.table(k, "gmm")
        gr = None
        if g is not None and not g.empty:
            gg = g[(g["epoch"] == row["epoch"]) & (g["split"] == split) & (g["name"] == name)]
            gr = gg.iloc[-1].to_dict() if not gg.empty else None
        with cols[i % len(cols)]:
            fig = F.gap_histogram_figure(row.to_dict(), gr, title=f"{labels[k].split(' (')[0]} · epoch {int(row['epoch']) + 1}", gap_label=f"gap {name}")
            fig.update_layout(showlegend=False, height=300)
            st.plotly_chart(fig, key=f"compare.hist.{k}")

# ---------------------------------------------------------------- sweeps
if swept:
    st.subheader("Swept fields")
    pc = sel[sel["acc_fused"].notna()] if "acc_fused" in sel else sel.iloc[0:0]
    fields = [f for f in swept if f in pc and pc[f].notna().all()]
    if fields and not pc.empty:
        st.dataframe(pc[["name", "group"] + fields + acc_cols], hide_index=True, key="compare.params")
        chart(F.parallel_coords_figure(pc, fields, "acc_fused"), "compare.parcoords", pc[["name"] + fields + acc_cols], "sweep_parcoords")
