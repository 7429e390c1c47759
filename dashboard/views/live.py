"""Live: one run, refreshing itself every 0.5 s (``queries.LIVE_REFRESH_SECONDS``) while it runs.

Views load only their own series (a 100 000-step run stays fast), through the query layer's
(run, last row id) caches. Panels whose data the run lacks are hidden with a one-line
reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from modalscope.errors import ModalScopeError
from modalscope.launcher import interrupted_message, stop_run
from modalscope.dashboard import figures as F
from modalscope.dashboard import queries as q
from modalscope.dashboard import summaries as S
from modalscope.dashboard.widgets import chart, fmt_seconds, missing, status_badge

VIEWS = ["Overview", "Gradients", "Modality gap", "Contributions", "Method signals", "Robustness"]
KNOWN_PREFIXES = ("loss/", "grad_norm/", "grad_share/", "grad_ratio", "grad_applied", "conflict/", "probe", "best/", "acc/", "acc2/", "mae/", "lr", "time/",
                  "contrib/", "robust/")

runs = q.runs_table()
launched = [k for k in st.session_state.get("launched", []) if k not in set(runs["key"])]
keys = list(runs["key"]) + launched
requested = st.query_params.get("run") or st.session_state.get("live.run")
if requested and requested not in keys and q.run_path(requested) is not None and q.run_path(requested).is_dir():
    keys.append(requested)
if not keys:
    st.title("Live")
    st.info("No runs yet. Start one on the Launch page.")
    st.page_link("views/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()
if requested not in keys:
    requested = launched[-1] if launched else S.default_live_run(runs) or keys[0]
names = dict(zip(runs["key"], runs["name"])) if not runs.empty else {}


def _picked() -> None:
    st.query_params["run"] = st.session_state["live.select"]


if st.session_state.get("live.select") not in keys or st.session_state.get("live.select") != requested:
    st.session_state["live.select"] = requested
key = st.selectbox("Run", keys, format_func=lambda k: f"{names.get(k, k.split('/', 1)[-1])}  ({k.split('/')[0]})",
                   key="live.select", on_change=_picked)
if st.query_params.get("run") != key:
    st.query_params["run"] = key
st.session_state["live.run"] = key

cfg = q.config(key)
method = (cfg.get("method") or {}).get("name", "?")
if method == "unimodal":
    method = f"unimodal:{cfg['method'].get('modality')}"
data = cfg.get("data") or {}
st.title(names.get(key, key.split("/", 1)[-1]))
st.caption(f"{method} · {data.get('name', '?')}/{data.get('preset', '')} · seed {cfg.get('seed', '?')} · "
           f"{'gallery (read-only)' if not q.is_writable(key) else 'runs root'}")
view = st.segmented_control("View", VIEWS, default="Overview", key="live.view", label_visibility="collapsed") or "Overview"


@st.fragment(run_every=q.FIRST_ROWS_REFRESH_SECONDS)
def _starting() -> None:
    if q.reader(key) is not None:
        st.rerun()
    tail = q.log_tail(key, 15)
    if "error:" in tail or "Traceback" in tail:
        st.error("The trainer stopped before it opened its run store; its output:")
    else:
        st.info("Starting: waiting for the trainer to open its run store…")
    if tail:
        st.code(tail, language="text")


if q.reader(key) is None:
    _starting()
    st.stop()

initial_status = q.status(key)
# A run that has logged no training step yet (just launched) is looked at more often until its
# first step rows arrive, then at the normal pace: the first chart shows soon after the trainer's first flush.
awaiting_rows = initial_status == "running" and not q.has_step_rows(key)
smooth_default = 0.6


def _header(prog: dict, meta: dict) -> None:
    c = st.columns([1.2, 1, 1, 1, 1.2])
    c[0].metric("Status", status_badge(prog["status"]))
    c[1].metric("Epochs done", f"{prog['epochs_done']}/{prog['epochs']}",
                help="Finished epochs (the runs table and `modalscope runs list` count the same way); epochs are numbered from 1.")
    c[2].metric("Elapsed", fmt_seconds(prog["elapsed"]))
    c[3].metric("ETA", fmt_seconds(prog["eta"]) if prog["eta"] is not None else "—")
    with c[4]:
        if prog["status"] == "running" and q.is_writable(key):
            if st.button("Stop run", icon=":material/stop_circle:", key="live.stop", help="SIGTERM: the trainer finishes its step, saves and marks the run interrupted."):
                try:
                    pid = stop_run(q.run_path(key), q.roots().runs_dir)
                    st.toast(f"Sent SIGTERM to trainer {pid}")
                except ModalScopeError as e:
                    st.error(str(e))
    if prog["total"]:
        st.progress(min(1.0, prog["done"] / prog["total"]), text=f"step {prog['done']:,} of {prog['total']:,}")
    if prog["status"] == "interrupted":
        st.info(interrupted_message(meta.get("error", ""), str(q.run_path(key))), icon=":material/pause_circle:")
    elif meta.get("error"):
        st.error(f"Run error: {meta['error']}")
    thinned = S.describe_thinning(meta.get("thinned"))
    if thinned:
        st.caption(f"ℹ Thinned for the gallery: {thinned}")


def _overview(upto: int, smoothing: float, bayes: dict) -> None:
    acc = q.scalars(key, prefix="acc/", upto=upto)
    acc = acc[acc["name"].str.count("/") == 2]
    c1, c2 = st.columns(2)
    with c1:
        if acc.empty:
            missing("Accuracy", "no epoch has finished yet")
        else:
            chart(F.accuracy_figure(acc, bayes), "live.acc", acc, "accuracy")
    with c2:
        loss = q.step_series(key, prefix="loss/", upto=upto)
        if loss.empty:
            missing("Losses", "no training step logged yet")
        else:
            chart(F.scalar_lines(loss, "Training losses", "loss (nats)", smoothing=smoothing, prefix="loss/"), "live.loss", None, "losses")
    c3, c4 = st.columns(2)
    with c3:
        share = q.step_series(key, prefix="grad_share/", upto=upto)
        if share.empty:
            missing("Gradient shares", "needs ≥ 2 modalities and diagnostics.grad on")
        else:
            chart(F.scalar_lines(share, "Share of the gradient each encoder receives", "share of ‖g‖ (1/M = even)",
                                 smoothing=smoothing, prefix="grad_share/"), "live.share", None, "grad_share")
    with c4:
        hists = q.table(key, "histograms", upto=upto)
        if hists is None or hists.empty:
            missing("Modality gap", "diagnostics.gap was off, or the run has one modality")
        else:
            split = "test" if (hists["split"] == "test").any() else hists["split"].iloc[-1]
            h = hists[(hists["split"] == split) & (hists["name"] == sorted(hists["name"].unique())[0])]
            row = h.iloc[-1]
            gmm = q.table(key, "gmm", upto=upto)
            g = None
            if gmm is not None and not gmm.empty:
                gg = gmm[(gmm["epoch"] == row["epoch"]) & (gmm["split"] == split) & (gmm["name"] == row["name"])]
                g = gg.iloc[-1].to_dict() if not gg.empty else None
            chart(F.gap_histogram_figure(row.to_dict(), g, gap_label=f"gap {row['name']}"), "live.overview.gap", None, "gap", downloads=False)
    _probes(upto)
    ev = q.table(key, "events", upto=upto)
    if ev is not None and not ev.empty:
        with st.expander(f"Events ({len(ev)})"):
            st.dataframe(ev.assign(time=pd.to_datetime(ev["time"], unit="s").dt.strftime("%H:%M:%S")), hide_index=True)


def _probes(upto: int) -> None:
    """Probe accuracy per encoder with its init level and, when a trained-alone reference run
    exists, that level and the utilisation; otherwise the reason, per modality."""
    probes = q.scalars(key, prefix="probe", upto=upto)
    cur = probes[probes["name"].str.startswith("probe/test/") & (probes["name"].str.count("/") == 2)] if not probes.empty else probes
    if cur.empty:
        return
    last = probes.sort_values("id").groupby("name")["value"].last()
    init = {n.rsplit("/", 1)[-1]: v for n, v in last.items() if n.startswith("probe_init/test/")}
    logged = {n.rsplit("/", 1)[-1]: v for n, v in last.items() if n.startswith("probe_util/")}
    ref = q.utilisation(key, len(probes))
    alone, util, reasons = {}, {}, {}
    for r in ref.itertuples() if not ref.empty else []:
        if r.probe_alone == r.probe_alone:
            alone[r.modality] = r.probe_alone
        u = r.utilisation if r.utilisation == r.utilisation else logged.get(r.modality)
        if u is not None:
            util[r.modality] = u
        elif r.reason:
            reasons[r.modality] = r.reason
    c1, c2 = st.columns([2, 1])
    with c1:
        chart(F.probe_figure(cur, init, alone), "live.probe", cur, "probe")
    with c2:
        st.markdown("**Utilisation**: how far each encoder got from its level at initialisation toward the level it reaches "
                    "trained alone (100 % = as good as alone).")
        if util:
            st.dataframe(pd.DataFrame({"modality": list(util), "utilisation": [f"{v:.0%}" for v in util.values()],
                                       "trained alone": [S.fmt_values([alone.get(m)])[0] for m in util]}), hide_index=True, key="live.util")
        for m, why in reasons.items():
            st.caption(f"{m}: no trained-alone reference found — {why}")


def _gradients(upto: int, smoothing: float) -> None:
    """Before the method (``grad_norm``/``grad_share``: the plain backward pass) beside after it
    (``grad_applied*``: what the optimiser got), so OGM-GE's damping and CAL's acceleration show."""
    norms = q.step_series(key, prefix="grad_norm/", upto=upto)
    applied = q.step_series(key, prefix="grad_applied/", upto=upto)
    if norms.empty:
        missing("Gradient norms", "diagnostics.grad was off")
        return
    c1, c2 = st.columns(2)
    with c1:
        chart(F.scalar_lines(norms, "Gradient norm before the method (backward pass)", "‖g‖₂", smoothing=smoothing, prefix="grad_norm/",
                             y_log=True), "live.gradnorm", None, "grad_norm")
    with c2:
        if applied.empty:
            missing("Applied gradient", "this run did not log grad_applied/* (logged by newer trainers, after the method edits the gradient)")
        else:
            chart(F.scalar_lines(applied, "Gradient norm after the method (what the optimiser gets)", "‖g‖₂", smoothing=smoothing,
                                 prefix="grad_applied/", y_log=True), "live.gradapplied", None, "grad_applied")
    share = q.step_series(key, prefix="grad_share/", upto=upto)
    share_applied = q.step_series(key, prefix="grad_applied_share/", upto=upto)
    if not share.empty:
        c1, c2 = st.columns(2)
        with c1:
            chart(F.scalar_lines(share, "Gradient share before the method", "share of ‖g‖ (1/M = even)", smoothing=smoothing,
                                 prefix="grad_share/", y_range=[0, 1]), "live.gradshare", None, "grad_share")
        with c2:
            if not share_applied.empty:
                chart(F.scalar_lines(share_applied, "Gradient share after the method", "share of ‖g‖ (1/M = even)", smoothing=smoothing,
                                     prefix="grad_applied_share/", y_range=[0, 1]), "live.gradshare_applied", None, "grad_applied_share")
    ratio = q.step_series(key, names=["grad_ratio", "conflict/flag"], upto=upto)
    if ratio.empty:
        missing("Dominance ratio", "needs ≥ 2 modalities")
    else:
        tau = (cfg.get("diagnostics") or {}).get("conflict_tau")
        chart(F.conflict_figure(ratio, tau, smoothing=smoothing), "live.ratio", None, "dominance")
    cos = q.step_series(key, prefix="conflict/cos", upto=upto)
    if cos.empty:
        missing("Conflict cosines", "diagnostics.conflict was off, or this branch's diagnostics do not log them")
    else:
        chart(F.scalar_lines(cos, "Gradient cosines (below 0: the two losses pull the parameters apart)", "cosine (−1 conflict … 1 aligned)",
                             smoothing=smoothing, label_fn=F.conflict_label, y_range=[-1.05, 1.05]), "live.cos", None, "conflict_cos")


def _gap(upto: int) -> None:
    hists = q.table(key, "histograms", upto=upto)
    if hists is None or hists.empty:
        missing("Modality-gap histograms", "diagnostics.gap was off, or the run has one modality")
        return
    gmm = q.table(key, "gmm", upto=upto)
    c1, c2, c3 = st.columns([1, 1, 2])
    series = sorted(hists["name"].unique())
    name = c1.selectbox("Gap series", series, key="live.gap.series", help="Gap = confidence of the first modality minus the second's on the true class, per sample.")
    splits = sorted(hists[hists["name"] == name]["split"].unique())
    split = c2.selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0, key="live.gap.split")
    h = hists[(hists["name"] == name) & (hists["split"] == split)]
    epochs = sorted(int(e) for e in h["epoch"].unique())
    if len(epochs) > 1:
        # Follow the newest epoch until the user moves the slider: a slider still at the newest
        # epoch of the previous refresh is moved to the new newest one.
        cur, prev_latest = st.session_state.get("live.gap.epoch"), st.session_state.get("live.gap.latest")
        if cur is None or cur not in epochs or cur == prev_latest:
            st.session_state["live.gap.epoch"] = epochs[-1]
        st.session_state["live.gap.latest"] = epochs[-1]
        ep = c3.select_slider("Epoch", options=epochs, format_func=lambda e: str(e + 1), key="live.gap.epoch",
                              help="Follows the newest epoch while the run trains; move it to pin an epoch, move it to the end to follow again.")
    else:
        ep = epochs[0]
        c3.caption(f"epoch {ep + 1} (only one histogram so far)")
    row = h[h["epoch"] == ep].iloc[-1]
    g = None
    if gmm is not None and not gmm.empty:
        gg = gmm[(gmm["epoch"] == ep) & (gmm["split"] == split) & (gmm["name"] == name)]
        if not gg.empty:
            g = gg.iloc[-1].to_dict()
    left, right = st.columns(2)
    with left:
        data = pd.DataFrame({"left": row["edges"][:-1], "right": row["edges"][1:], "count": row["counts"]})
        chart(F.gap_histogram_figure(row.to_dict(), g, gap_label=f"gap {name}"), "live.gap.hist", data, f"gap_{name}_{split}_e{ep + 1}")
        if g is None:
            st.caption("_GMM overlay: not in this run — diagnostics.gmm was off or no fit at this epoch_")
        else:
            verdict = "balanced (1 component wins on BIC)" if int(g.get("balanced") or 0) else "imbalanced (2 components win on BIC)"
            st.caption(f"GMM: BIC₁ = {g['bic1']:.1f}, BIC₂ = {g['bic2']:.1f} → {verdict}; threshold {g['threshold']:.3f}")
    with right:
        chart(F.gap_heatmap_figure(h), "live.gap.heat", None, f"gap_heatmap_{name}_{split}")
    samples = q.table(key, "samples", arg=str(ep), upto=upto)
    if samples is not None and not samples.empty:
        s = samples[(samples["split"] == split) & (samples["name"] == name)]
        if not s.empty:
            with st.expander("Most extreme samples at this epoch"):
                s = s.assign(abs_gap=s["gap"].abs()).sort_values("abs_gap", ascending=False).head(50)
                st.dataframe(s.drop(columns=["abs_gap"]), hide_index=True)


def _contributions(upto: int) -> None:
    df = q.table(key, "contributions", upto=upto)
    if df is None or df.empty:
        sc = q.scalars(key, prefix="contrib/", upto=upto)
        if not sc.empty:
            parts = sc["name"].str.split("/", expand=True)
            wide = sc.assign(kind=parts[1], modality=parts[2]).pivot_table(index=["epoch", "modality"], columns="kind", values="value").reset_index()
            df = wide.rename(columns={"conf": "confidence"})
            for c in ("w", "info", "confidence"):
                if c not in df:
                    df[c] = np.nan
    if df is None or df.empty:
        missing("Contributions", "diagnostics.contrib was off or this branch does not log them")
        return
    chart(F.contributions_figure(df), "live.contrib", df, "contributions")
    st.caption("**W^m** is the share of the prediction credited to modality m; **I(m)** its exact Shapley value (how much the fused "
               "loss rises without it); **D(m)** how sure it is alone. **Captum attribution** is an independent check computed with the "
               "captum library: the rise in loss when the modality's input is removed (feature ablation) — it should rank the "
               "modalities as I(m) does.")


def _signal_frame(names: list[str], upto: int) -> tuple[pd.DataFrame, str]:
    df = q.step_series(key, names=names, upto=upto)
    x = "step" if df["step"].nunique() > df["epoch"].nunique() * 2 else "epoch"
    if x == "epoch":
        df = df.assign(epoch=df["epoch"] + 1)
    return df, x


def _method(upto: int, smoothing: float) -> None:
    """The panels the method declares (``Method.panels``), each with its one-line reading;
    every other series the run logged stays reachable behind an expander."""
    own = [n for n in q.scalar_names(key, upto) if not n.startswith(KNOWN_PREFIXES)]
    panels = q.method_panels(cfg)
    drawn = 0
    for i, panel in enumerate(panels):
        names = panel.matches(own)
        if not names:
            continue
        df, x = _signal_frame(names, upto)
        chart(F.method_panel_figure(df, panel, x=x, smoothing=smoothing if x == "step" else 0.0), f"live.panel.{i}", df, f"method_{i}")
        st.caption(f"**How to read it:** {panel.reading}")
        drawn += 1
    if not drawn:
        missing("Method signals", f"method {method} declares no panels" if not panels else f"method {method} has logged none of its signals yet")
    if own:
        with st.expander(f"All raw series ({len(own)})"):
            pick = st.multiselect("Series", own, default=own[: min(4, len(own))], key="live.raw.pick")
            if pick:
                df, x = _signal_frame(pick, upto)
                chart(F.scalar_lines(df, "Raw series", "value", x=x, smoothing=smoothing if x == "step" else 0.0), "live.raw", df, "raw")
    lr = q.scalars(key, names=["lr", "time/epoch"], upto=upto)
    if not lr.empty:
        c1, c2 = st.columns(2)
        with c1:
            d = lr[lr["name"] == "lr"].assign(epoch=lambda d: d["epoch"] + 1)
            st.plotly_chart(F.scalar_lines(d, "Learning rate", "lr", x="epoch"), key="live.lr")
        with c2:
            d = lr[lr["name"] == "time/epoch"].assign(epoch=lambda d: d["epoch"] + 1)
            st.plotly_chart(F.scalar_lines(d, "Training time per epoch", "seconds", x="epoch"), key="live.time")


def _robustness(upto: int) -> None:
    """The charts first (bars for blanking, lines with markers for graded noise), the stored
    tables under them."""
    shown = False
    rob = q.scalars(key, prefix="robust/", upto=upto)
    if not rob.empty:
        clean = rob.loc[rob["name"] == "robust/clean", "value"]
        graded = rob[rob["name"].str.count("/") == 3]
        kinds = sorted(graded["name"].str.split("/").str[2].unique())
        cols = st.columns(max(1, len(kinds)))
        for col, kind in zip(cols, kinds):
            with col:
                chart(F.robustness_figure(graded, kind, float(clean.iloc[-1]) if len(clean) else None), f"live.robust.{kind}", graded,
                      f"robust_{kind}")
            shown = True
        st.caption("Test accuracy when one modality's input is replaced at test time (blanked, or noised at growing levels); "
                   "the dotted line is the accuracy with every input intact. A large drop when the weak modality is blanked "
                   "means the model does use it.")
    for t in q.table(key, "table_names", upto=upto) or []:
        df = q.table(key, "table", arg=t, upto=upto)
        if df is not None and not df.empty:
            with st.expander(f"Table `{t}`", expanded=not shown):
                st.dataframe(df, hide_index=True)
            shown = True
    if not shown:
        missing("Robustness", "no robustness evaluation was stored (it runs at the end of training when enabled)")


@st.fragment(run_every=(q.FIRST_ROWS_REFRESH_SECONDS if awaiting_rows else q.LIVE_REFRESH_SECONDS) if initial_status == "running" else None)
def live_panels() -> None:
    meta = q.meta(key)
    prog = q.progress(key)
    if initial_status == "running" and prog["status"] != "running":
        st.rerun()
    upto = q.last_id(key)
    if awaiting_rows and q.has_step_rows(key):
        st.rerun()  # the first rows: redraw the page once, refreshing at the normal pace from now on
    _header(prog, meta)
    bayes = (meta.get("reference") or {}).get("bayes") or {}
    smoothing = st.session_state.get("live.smoothing", smooth_default)
    width = q.bucket_width(key) if view in ("Overview", "Gradients", "Method signals") else 0
    every = q.stride(key) if not width and view in ("Overview", "Gradients", "Method signals") else 1
    if width:
        st.caption(f"Long run: each point of a step chart is the first, lowest, highest or last value of {width} steps (every extreme is "
                   "drawn); smoothed lines are the exact mean of each block of steps. Tick *Full resolution* in the sidebar for every row.")
    elif every > 1:
        st.caption(f"Long run: step series show every {every}th logged step (tick *Full resolution* in the sidebar for all of them).")
    if view == "Overview":
        _overview(upto, smoothing, bayes)
    elif view == "Gradients":
        _gradients(upto, smoothing)
    elif view == "Modality gap":
        _gap(upto)
    elif view == "Contributions":
        _contributions(upto)
    elif view == "Method signals":
        _method(upto, smoothing)
    else:
        _robustness(upto)


if view in ("Overview", "Gradients", "Method signals"):
    st.sidebar.slider("Smoothing (EMA weight)", 0.0, 0.99, smooth_default, 0.01, key="live.smoothing",
                      help="Debiased exponential moving average; the raw series stays visible, faint.")
st.sidebar.toggle("Full resolution", key="full_resolution",
                  help="Long runs are drawn from a per-block summary (first, lowest, highest and last value of each block of steps); "
                       "this reads every logged step (slower the first time, then cached).")
live_panels()
