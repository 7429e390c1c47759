"""Compare: runs or whole groups (method × seeds, sweeps) side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from modalscope.dashboard import comparison as CMP
from modalscope.dashboard import figures as F
from modalscope.dashboard import figures_compare as FC
from modalscope.dashboard import lessons as LS
from modalscope.dashboard import queries as q
from modalscope.dashboard import summaries as S
from modalscope.dashboard.widgets import chart

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
    teaching = [g for g in (f"{m} · imbalanced" for m in ("joint", "ogm_ge", "ensemble", "unimodal:visual")) if g in groups]
    chosen_groups = st.multiselect("Groups", groups, default=teaching or groups[: min(3, len(groups))], key="compare.groups")
    sel = runs[runs["group"].isin(chosen_groups)]
if sel.empty:
    st.info("Pick at least one run or group.")
    st.stop()

# ---------------------------------------------------------------- final metrics
if mode == "runs":
    dup = sel["name"].duplicated(keep=False)
    sel = sel.assign(group=np.where(dup, sel["name"] + " (" + sel["source"] + ")", sel["name"]))
mods: list[str] = []
for k in sel["key"]:
    for m in q.meta(k).get("modalities") or []:
        if m not in mods:
            mods.append(m)
presets = sel["preset"].dropna().astype(str)
preset = presets.mode().iloc[0] if not presets.empty else None
# the selection, its joint partners (paired by seed) and the unimodal references, with their last logged values
pair_on = list(CMP.PAIR_ON) + [f for f in swept if f not in ("seed", "method.name", "method.modality") and f in runs]
pool = runs[runs["key"].isin(sel["key"]) | (runs["method"] == CMP.REFERENCE) | runs["method"].astype(str).str.startswith("unimodal:")].copy()
extra = pd.DataFrame([CMP.final_metric_columns(q.final_values(k, prefixes=CMP.FINAL_PREFIXES), mods) for k in pool["key"]], index=pool.index)
pool = pd.concat([pool.drop(columns=[c for c in extra.columns if c in pool]), extra], axis=1)
util_reasons: list[tuple[str, str, str]] = []
selected, sel_presets = set(sel["key"]), set(sel["preset"].astype(str))
for idx, k in zip(pool.index, pool["key"]):  # utilisation not logged (reference trained later): compute it now
    if k not in selected and not (pool.at[idx, "method"] == CMP.REFERENCE and str(pool.at[idx, "preset"]) in sel_presets):
        continue
    if not any(np.isfinite(pool.at[idx, f"probe_{m}"]) and not np.isfinite(pool.at[idx, f"util_{m}"]) for m in mods):
        continue
    for u in q.utilisation_rows(k) or []:
        if u["modality"] in mods and np.isfinite(u["utilisation"]):
            pool.at[idx, f"util_{u['modality']}"] = u["utilisation"]
        elif u["modality"] in mods and u["reason"] and k in selected:
            util_reasons.append((k.split("/", 1)[1], u["modality"], u["reason"]))
pool["ref"] = CMP.pair_with_reference(pool, pair_on)
sel = sel[["key", "group"]].merge(pool.drop(columns=["group"]), on="key", how="left")
sel["bayes_fused"] = [((q.meta(k).get("reference") or {}).get("bayes") or {}).get("fused", np.nan) for k in sel["key"]]
sel["wall_s"] = pd.to_numeric(sel["end_time"], errors="coerce") - pd.to_numeric(sel["start_time"], errors="coerce")

same = pool[(pool["preset"].astype(str) == str(preset)) & (pool["status"] == "finished")] if preset else pool.iloc[0:0]
alone_runs = {m: same[same["method"] == f"unimodal:{m}"] for m in mods}
alone = {m: pd.to_numeric(df["acc_fused"], errors="coerce").mean() for m, df in alone_runs.items() if not df.empty}
joint_same = same[same["method"] == CMP.REFERENCE]
util = {m: pd.to_numeric(joint_same[f"util_{m}"], errors="coerce").mean() for m in mods if f"util_{m}" in joint_same}
heads = {m: pd.to_numeric(joint_same[f"acc_{m}"], errors="coerce").mean() for m in mods if f"acc_{m}" in joint_same}
weak, why = LS.weak_modality(alone, util, heads)
alone_probe = np.nan
if weak and weak in alone_runs and f"probe_{weak}" in alone_runs[weak]:
    alone_probe = pd.to_numeric(alone_runs[weak][f"probe_{weak}"], errors="coerce").mean()
one_preset = sel["preset"].astype(str).nunique() == 1
num, shown = CMP.comparison_table(sel, weak, label="run" if mode == "runs" else "group", alone_probe=alone_probe if one_preset else np.nan,
                                  alone_acc=alone.get(weak, np.nan) if weak and one_preset else np.nan, lookup=pool)
st.subheader("Final metrics")
st.dataframe(shown, hide_index=True, key="compare.final")
notes = ["Ranked by fused test accuracy " + ("at the best-valid epoch (the epoch with the best *valid* fused accuracy; never chosen on test)."
                                            if num["rank_by"].iloc[0] == "best-valid" else "at the last epoch (not every run logs a best-valid accuracy)."),
         "Δ vs joint: each run minus the `joint` run with the same data and seed, averaged over seeds; [95 % t-interval] when there are ≥ 2 seeds."]
if not one_preset:
    notes.append(f"The rows span several presets: trained-alone levels and reference lines are left out (they differ per preset); the weak modality is read on `{preset}`.")
if weak:
    notes.append(f"Weak modality: **{weak}** ({why}). Its probe is a linear classifier on the frozen {weak} encoder's features; "
                 f"utilisation = (probe − probe at init) / (probe of the encoder trained alone − probe at init): 1 = learns as much as alone, 0 = nothing.")
    if not any(c.startswith(f"{weak} utilisation") or c.startswith(f"{weak} probe") for c in shown.columns):
        notes.append(f"These runs log no probe of the {weak} encoder (`probe/test/{weak}`, `probe_util/{weak}`): train them with the probe diagnostics on.")
why_not = sorted({f"{run} ({m}): {reason}" for run, m, reason in util_reasons if m == weak})
if why_not:
    notes.append("No utilisation for " + "; ".join(why_not[:3]) + ("; …" if len(why_not) > 3 else "") + ".")
notes.append("gap_to_bayes = Bayes-optimal fused accuracy − fused accuracy (last epoch); wall_s = training wall time in seconds; mean ± std over the runs of a group.")
st.caption(" ".join(notes))
d1, d2 = st.columns([1, 5])
d1.download_button("CSV", num.to_csv(index=False).encode(), file_name="final_metrics.csv", mime="text/csv", icon=":material/download:", key="compare.final.csv", on_click="ignore")
acc_cols = ["acc_fused"] + sorted(c for c in sel.columns if c.startswith("acc_") and c != "acc_fused" and sel[c].notna().any())
acc_cols = [c for c in acc_cols if c in sel]
if acc_cols:
    order = [g for g in num["group"] if g in set(sel["group"])]
    bars = sel.assign(group=pd.Categorical(sel["group"], categories=order, ordered=True))
    levels = [FC.Level(f"{m} alone", float(v), m) for m, v in alone.items() if np.isfinite(v)] if one_preset else []
    bayes = pd.to_numeric(sel["bayes_fused"], errors="coerce").dropna()
    if not bayes.empty and one_preset:
        levels.append(FC.Level("Bayes ceiling (fused)", float(bayes.mean()), "fused", "dash"))
    chart(FC.levels_bars_figure(bars, acc_cols, levels, title="Final test accuracy (last epoch) against the Bayes ceiling and each modality alone"),
          "compare.bars", sel[["name", "group"] + acc_cols], "final_accuracy")

# ---------------------------------------------------------------- curves
st.subheader("Curves")
names = sorted(set().union(*[set(q.scalar_names(k)) for k in sel["key"]]))
if names:
    default_metric = "acc/test/fused" if "acc/test/fused" in names else names[0]
    m1, m2, m3 = st.columns([2, 1, 1])
    metric = m1.selectbox("Metric", names, index=names.index(default_metric), key="compare.metric")
    frames = []
    for k, grp in zip(sel["key"], sel["group"]):
        df = q.step_series(k, names=[metric])
        if df.empty:
            continue
        bm = F.bucket_means(df)  # a long run's summary: average the exact bucket means, not the drawn extremes
        if bm is not None:
            df = pd.DataFrame({"step": bm[0], "epoch": df.groupby("bucket", sort=True)["epoch"].first().to_numpy(), "value": bm[1]})
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
hist_by_group: dict[str, list[tuple[str, pd.DataFrame]]] = {}
keys_by_group = {str(g): list(d["key"]) for g, d in sel.groupby("group", sort=False)}
for grp in num["group"].astype(str):  # the first 8 groups with histograms, in rank order: read no run beyond them
    if len(hist_by_group) == 8:
        break
    for k in keys_by_group.get(grp, []):
        h = q.table(k, "histograms")
        if h is not None and not h.empty:
            hist_by_group.setdefault(grp, []).append((k, h))
hist_groups = [g for g in num["group"].astype(str) if g in hist_by_group][:8]
if not hist_groups:
    st.caption("_Gap histograms: none of the selected runs logged them (diagnostics.gap off, or unimodal runs)._")
else:
    max_ep = max(int(h["epoch"].max()) for g in hist_groups for _, h in hist_by_group[g])
    h1, h2 = st.columns([3, 1])
    ep = h1.slider("Epoch", 1, max_ep + 1, max_ep + 1, key="compare.hist.epoch") - 1
    split = h2.selectbox("Split", ["test", "train", "valid"], key="compare.hist.split")
    if mode == "groups":
        st.caption("One histogram per group: the counts of the group's runs (seeds) at that epoch are added; the GMM fit is drawn when the group has one run.")
    cols = st.columns(min(3, len(hist_groups)))
    for i, grp in enumerate(hist_groups):
        rows, gmm_row = [], None
        for k, h in hist_by_group[grp]:
            hh = h[h["split"] == split]
            if hh.empty:
                continue
            name = sorted(hh["name"].unique())[0]
            hh = hh[hh["name"] == name]
            avail = hh[hh["epoch"] <= ep]
            row = (avail if not avail.empty else hh).iloc[-1].to_dict()
            rows.append(row)
            g = q.table(k, "gmm")
            if g is not None and not g.empty:
                gg = g[(g["epoch"] == row["epoch"]) & (g["split"] == split) & (g["name"] == name)]
                gmm_row = gg.iloc[-1].to_dict() if not gg.empty else None
        pooled = CMP.pool_histograms(rows)
        if pooled is None:
            cols[i % len(cols)].caption(f"{grp}: no {split} histogram")
            continue
        n_runs = pooled.pop("n_runs")
        with cols[i % len(cols)]:
            runs_note = f" · {n_runs} runs" if n_runs > 1 else ""
            fig = F.gap_histogram_figure(pooled, gmm_row if n_runs == 1 else None, title=f"{grp} · epoch {int(pooled['epoch']) + 1}{runs_note}",
                                         gap_label=f"gap {pooled['name']}")
            fig.update_layout(showlegend=False, height=300)
            st.plotly_chart(fig, key=f"compare.hist.{grp}")

# ---------------------------------------------------------------- sweeps
if swept:
    st.subheader("Swept fields")
    pc = sel[sel["acc_fused"].notna()] if "acc_fused" in sel else sel.iloc[0:0]
    fields = [f for f in swept if f in pc and pc[f].notna().all()]
    if fields and not pc.empty:
        st.dataframe(pc[["name", "group"] + fields + acc_cols], hide_index=True, key="compare.params")
        chart(F.parallel_coords_figure(pc, fields, "acc_fused"), "compare.parcoords", pc[["name"] + fields + acc_cols], "sweep_parcoords")
