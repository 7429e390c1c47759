"""Runs: every run under the runs root and the sample gallery; filter, group, export, diff, delete."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from modalscope.errors import ModalScopeError
from modalscope.store import delete_run
from modalscope.dashboard import figures as F
from modalscope.dashboard import queries as q
from modalscope.dashboard import summaries as S
from modalscope.dashboard.widgets import heartbeat_text, status_badge

st.title("Runs")
st.caption("Every run under the runs root and the shipped gallery (`sample_runs/`, read-only). Select runs to open, compare, diff or delete.")

runs = q.runs_table()
if runs.empty:
    r = q.roots()
    st.info(f"No runs yet under `{r.runs_dir}` or `{r.sample_runs}`. Start one on the Launch page or with `modalscope train`.")
    st.page_link("views/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

cfgs = q.configs(runs)
swept = S.swept_fields(cfgs.values())
runs = S.add_config_columns(runs, cfgs, swept)
acc_cols = ["acc_fused", "best_acc_fused"] + sorted(c for c in runs.columns if c.startswith("acc_") and c != "acc_fused")
acc_cols = [c for c in acc_cols if c in runs]

# ---------------------------------------------------------------- filters
c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1, 1])
text = c1.text_input("Filter by name", key="runs.filter", placeholder="e.g. ogm or s0")
statuses = c2.multiselect("Status", sorted(runs["status"].dropna().unique()), key="runs.status")
methods = c3.multiselect("Method", sorted(runs["method"].dropna().astype(str).unique()), key="runs.method")
presets = c4.multiselect("Preset", sorted(runs["preset"].dropna().astype(str).unique()), key="runs.preset")
sources = c5.multiselect("Source", ["runs", "gallery"], key="runs.source")


def _filter(df: pd.DataFrame) -> pd.DataFrame:
    if text:
        df = df[df["name"].str.contains(text, case=False, regex=False)]
    for col, sel in (("status", statuses), ("method", methods), ("preset", presets), ("source", sources)):
        if sel:
            df = df[df[col].astype(str).isin(sel)]
    return df


view = _filter(runs)
ACC_LABELS = {"acc_fused": ("fused (last)", "test accuracy of the fused prediction at the last epoch"),
              "best_acc_fused": ("fused (best valid)", "test accuracy at the epoch with the best validation accuracy (chosen on valid, never on test)")}
colcfg = {c: st.column_config.TextColumn(ACC_LABELS.get(c, (c.replace("acc_", "") + " alone (last)", ""))[0],
                                         help=ACC_LABELS.get(c, ("", f"test accuracy of the {c[4:]} head alone at the last epoch"))[1])
          for c in acc_cols}
colcfg["seed"] = st.column_config.NumberColumn("seed", format="%d")


@st.fragment(run_every=2.0 if (runs["status"] == "running").any() else None)
def _table() -> None:
    """The runs table; refreshes itself every 2 s while a run is running (status, heartbeat, progress)."""
    fresh = view
    if (runs["status"] == "running").any():
        latest = q.runs_table()
        if not (latest["status"] == "running").any():
            st.rerun()  # nothing runs any more: redraw the page once and stop refreshing
        fresh = _filter(S.add_config_columns(latest, cfgs, swept))
    now = time.time()
    table = fresh.copy()
    table["status"] = [status_badge(s) + (f" · {heartbeat_text(h, now)}" if s == "running" else "")
                       for s, h in zip(fresh["status"], fresh.get("heartbeat", [None] * len(fresh)))]
    table["progress"] = [f"{int(d or 0)}/{int(e or 0)}" if pd.notna(e) else "" for d, e in zip(fresh["epochs_done"], fresh["epochs"])]
    table["started"] = pd.to_datetime(fresh["start_time"], unit="s", errors="coerce").dt.strftime("%Y-%m-%d %H:%M")
    for c in acc_cols:  # a modality a run does not have reads "—" (as in the groups table and `runs list`)
        table[c] = S.fmt_values(fresh[c])
    cols = ["name", "method", "preset", "seed", "status", "progress"] + acc_cols + \
        (["sweep"] if fresh["sweep"].astype(str).str.len().gt(0).any() else []) + swept + ["source", "started"]
    cols = list(dict.fromkeys(c for c in cols if c in table))
    st.dataframe(table[cols], hide_index=True, column_config=colcfg, key="runs.table")
    st.caption(f"{len(fresh)} of {len(runs)} runs · test accuracy, fused and each modality alone, at the last epoch; "
               "*best valid* is the fused test accuracy at the epoch chosen on the validation split · — = the run has no such value.")


_table()
st.download_button("Download table (CSV)", view.drop(columns=["path"], errors="ignore").to_csv(index=False).encode(),
                   file_name="modalscope_runs.csv", mime="text/csv", icon=":material/download:")

# ---------------------------------------------------------------- open / select
st.subheader("Open a run")
o1, o2 = st.columns([3, 1])
labels = dict(zip(view["key"], view["name"] + "  ·  " + view["method"].astype(str) + " · " + view["preset"].astype(str) + " · " + view["status"].astype(str)))
keys = list(view["key"])
if keys:
    pick = o1.selectbox("Run", keys, format_func=lambda k: labels.get(k, k), key="runs.open", label_visibility="collapsed")
    if o2.button("Open in Live", icon=":material/monitoring:", type="primary", key="runs.open_live"):
        st.session_state["live.run"] = pick
        st.switch_page("views/live.py", query_params={"run": pick})

selected = st.multiselect("Select runs for compare, diff or delete", keys, format_func=lambda k: labels.get(k, k), key="runs.selected")
a1, a2, a3 = st.columns(3)
if a1.button("Compare selected", disabled=len(selected) < 1, icon=":material/compare_arrows:"):
    st.session_state["compare.selected"] = list(selected)
    st.switch_page("views/compare.py")

if len(selected) == 2:
    ka, kb = selected
    na, nb = labels[ka].split("  ·  ")[0], labels[kb].split("  ·  ")[0]
    st.markdown(f"**Config diff** · `{na}` vs `{nb}`")
    show_all = st.toggle("Show every field", key="runs.diff_all")
    diff = S.config_diff(cfgs.get(ka, {}), cfgs.get(kb, {}), na, nb if nb != na else nb + " (2)", include_all=show_all)
    if diff.empty:
        st.success("The two configs are identical.")
    else:
        st.dataframe(diff, hide_index=True, key="runs.diff")
elif len(selected) > 2:
    st.caption("Select exactly two runs to see their config diff.")

deletable = [k for k in selected if q.is_writable(k)]
if selected:
    with a3.popover("Delete selected", icon=":material/delete:", disabled=not deletable):
        st.write(f"Delete {len(deletable)} run folder(s) under `{q.roots().runs_dir}`? This cannot be undone. Gallery runs are never deleted.")
        if st.button("Yes, delete", type="primary", key="runs.delete_confirm"):
            errors = []
            for k in deletable:
                try:
                    delete_run(q.run_path(k), q.roots().runs_dir)
                except ModalScopeError as e:
                    errors.append(str(e))
            q._runs_table.clear()
            for e in errors:
                st.error(e)
            st.session_state.pop("runs.selected", None)
            st.rerun()

# ---------------------------------------------------------------- groups and sweeps
st.subheader("Groups and sweeps")
by_options = ["method", "preset", "sweep", "dataset"] + [f for f in swept if f in view]
default_by = ["sweep"] + swept[:1] if swept else ["method", "preset"]
by = st.multiselect("Group by", by_options, default=[b for b in default_by if b in by_options], key="runs.group_by",
                    help="Runs that agree on these fields form a group; the table shows mean ± std over the group (usually its seeds).")
grouped = view.assign(group=S.group_labels(view, by))
grouped["wall_s"] = pd.to_numeric(grouped["end_time"], errors="coerce") - pd.to_numeric(grouped["start_time"], errors="coerce")
fin = S.final_metrics_table(grouped[grouped["status"] == "finished"] if (grouped["status"] == "finished").any() else grouped)
if not fin.empty:
    st.dataframe(S.format_mean_std(fin), hide_index=True, key="runs.groups")
if swept:
    sweeps = sorted(s for s in view["sweep"].astype(str).unique() if s)
    st.markdown(f"**Swept fields** ({', '.join(sweeps) or 'sweep'}): " + ", ".join(f"`{f}`" for f in swept))
    in_sweep = view[view["sweep"].astype(str).str.len() > 0]
    pc = in_sweep[in_sweep[swept].notna().all(axis=1) & in_sweep["acc_fused"].notna()] if "acc_fused" in view else view.iloc[0:0]
    params = pc[["name"] + swept + acc_cols].assign(**{c: S.fmt_values(pc[c]) for c in acc_cols}) if not pc.empty else pc
    if not params.empty:
        st.dataframe(params, hide_index=True, key="runs.params", column_config=colcfg)
        st.plotly_chart(F.parallel_coords_figure(pc, swept, "acc_fused"), key="runs.parcoords")
else:
    st.caption("No sweep runs here: runs started by `modalscope sweep` carry `tags.sweep` and `tags.swept` and are grouped by their swept fields.")
