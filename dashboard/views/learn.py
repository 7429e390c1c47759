"""Learn: a guided walk-through of modality imbalance on the shipped sample runs.

Runs are found by their config (``method.name``, ``method.modality``, ``data.preset``),
never by folder name; a step whose runs are missing says which run it needs and how to make
it, and the rest of the walk-through still works.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.errors import ModalScopeError
from core.launcher import launch
from core.methods.base import _REGISTRY as METHODS
from dashboard import figures as F
from dashboard import queries as q
from dashboard import summaries as S
from dashboard.learn_steps import PRESET, STEPS


st.title("Learn: modality imbalance in seven steps")
runs = q.runs_table()
cfgs = q.configs(runs) if not runs.empty else {}

if "learn.step" not in st.session_state:
    st.session_state["learn.step"] = STEPS[0]
step = st.radio("Step", STEPS, key="learn.step", horizontal=True, label_visibility="collapsed")
i = STEPS.index(step)


def need(what: str) -> None:
    st.info(f"This step needs {what} in the gallery. Regenerate it with `modalscope sample-runs --out sample_runs`, "
            "or train one on the Launch page (runs are found by method and preset, not by name).")


def pick(method: str, preset: str = PRESET, modality: str | None = None) -> pd.DataFrame:
    if runs.empty:
        return runs
    found = S.find_runs(runs, cfgs, method=method, preset=preset, modality=modality)
    if "source" in found and (found["source"] == "gallery").any():
        found = found[found["source"] == "gallery"]
    return found.sort_values(["source", "name"], ascending=[True, True])


def curve(keys: list[str], metric: str, group: str) -> pd.DataFrame:
    frames = [q.scalars(k, names=[metric]).assign(run=k, group=group) for k in keys]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def final(keys: list[str], metric: str) -> float:
    vals = [q.summary(k).get(metric) for k in keys]
    vals = [v for v in vals if v is not None and not pd.isna(v)]
    return float(np.mean(vals)) if vals else float("nan")


joint = pick("joint")
uni_a = pick("unimodal", modality="audio")
uni_v = pick("unimodal", modality="visual")
mods = ["audio", "visual"]
if not joint.empty:
    mods = q.meta(joint["key"].iloc[0]).get("modalities") or mods
weak = mods[-1]

if i == 0:
    st.markdown(
        "A **multimodal** model sees several inputs of the same thing — here an *audio* and a *visual* vector — and predicts one label. "
        "Each input alone is imperfect, but they are **complementary**: together they can be right far more often than either alone. "
        "The bars show the best accuracy any model could reach (the Bayes ceiling, computed from the true data distribution)."
    )
    any_run = joint if not joint.empty else (runs[runs["preset"] == PRESET] if not runs.empty else runs)
    bayes = (q.meta(any_run["key"].iloc[0]).get("reference") or {}).get("bayes") if not any_run.empty else None
    if bayes:
        st.plotly_chart(F.ceilings_figure(bayes), key="learn.ceilings")
    else:
        need(f"any run on the `{PRESET}` preset")
elif i == 1:
    st.markdown(
        "Train one encoder per modality **on its own** (the `unimodal` method). This is the reference every multimodal run must be compared with: "
        "it tells us how much each modality *can* learn when nothing competes with it."
    )
    frames = [curve(list(df["key"]), "acc/test/fused", f"{m} alone") for m, df in (("audio", uni_a), ("visual", uni_v)) if not df.empty]
    frames = [f for f in frames if not f.empty]
    if frames:
        st.plotly_chart(F.band_figure(pd.concat(frames), "Unimodal training: test accuracy", "test accuracy", x="epoch"), key="learn.uni")
    else:
        need("`unimodal` runs (method.modality = audio and visual)")
elif i == 2:
    st.markdown(
        "Now train **jointly** (late fusion, one loss on the fused prediction). The fused model beats each modality alone — but read the per-modality heads: "
        f"the fast modality (*{mods[0]}*) is learned well, while the slow one (*{weak}*) ends far below what it reaches alone (dotted line). "
        "That shortfall is **modality imbalance**: the fused loss is already low thanks to one modality, so the other stops being trained."
    )
    if joint.empty:
        need("a `joint` run")
    else:
        k = joint["key"].iloc[0]
        acc = q.scalars(k, prefix="acc/test/")
        acc = acc[acc["name"].str.count("/") == 2]
        fig = F.accuracy_figure(acc, title=f"Joint training ({joint['name'].iloc[0]}): test accuracy per head")
        alone = final(list(uni_v["key"]), "acc_fused") if not uni_v.empty else float("nan")
        if np.isfinite(alone):
            fig.add_hline(y=alone, line={"color": F.modality_color(weak), "dash": "dot"}, annotation_text=f"{weak} trained alone: {alone:.2f}")
        st.plotly_chart(fig, key="learn.joint")
        inside = final(list(joint["key"]), f"acc_{weak}")
        if np.isfinite(alone) and np.isfinite(inside):
            st.metric(f"{weak} head inside the joint model vs alone", f"{inside:.2f}", f"{inside - alone:+.2f} vs alone")
elif i == 3:
    st.markdown(
        "Why does the slow modality stop learning? Look at **where the gradient goes**. Early on, the fast modality's encoder receives almost all of the gradient; "
        "once it fits the labels the loss — and every encoder's gradient — shrinks, before the slow modality ever had its share. "
        "A share of 0.5 each would be even."
    )
    if joint.empty:
        need("a `joint` run")
    else:
        share = q.scalars(joint["key"].iloc[0], prefix="grad_share/")
        if share.empty:
            st.caption("_The joint run has no gradient shares (diagnostics.grad was off)._")
        else:
            st.plotly_chart(F.scalar_lines(share, "Joint training: share of the gradient per encoder", "share of ‖g‖", smoothing=0.8, prefix="grad_share/"),
                            key="learn.share")
elif i == 4:
    st.markdown(
        "Imbalance is also visible **per sample**. For each sample, the *modality gap* is how much more confident one modality's head is than the other's on the true class. "
        "When a subset of samples has a broken modality (the `noisy` preset), the gap histogram splits in two; a 2-component Gaussian mixture finds that split and "
        "methods such as GMM-adaptive use it to treat the two groups differently."
    )
    cand = pick("joint", preset="noisy")
    cand = cand if not cand.empty else joint
    shown = False
    for k in list(cand["key"]):
        h = q.table(k, "histograms")
        if h is None or h.empty:
            continue
        split = "test" if (h["split"] == "test").any() else h["split"].iloc[-1]
        row = h[h["split"] == split].iloc[-1]
        g = q.table(k, "gmm")
        gr = None
        if g is not None and not g.empty:
            gg = g[(g["epoch"] == row["epoch"]) & (g["split"] == split) & (g["name"] == row["name"])]
            gr = gg.iloc[-1].to_dict() if not gg.empty else None
        st.plotly_chart(F.gap_histogram_figure(row.to_dict(), gr, gap_label=f"gap {row['name']}"), key="learn.gap")
        shown = True
        break
    if not shown:
        need("a `joint` run with modality-gap histograms (preset `noisy` shows the two groups best)")
elif i == 5:
    st.markdown(
        "Each rebalancing method changes training so the slow modality keeps learning: some slow down the dominant encoder's gradient (OGM-GE), some add "
        "unimodal losses or reweight samples. Compare the fused accuracy **and** the weak modality's accuracy — a good method raises the second without losing the first."
    )
    if runs.empty:
        need("runs of several methods")
    else:
        rows = []
        for _, r in runs.iterrows():
            c = cfgs.get(r["key"], {})
            if (c.get("data") or {}).get("preset") != PRESET or r.get("status") != "finished":
                continue
            rows.append({**r.to_dict(), "group": S.method_label(c)})
        df = pd.DataFrame(rows)
        metrics = [m for m in ["acc_fused"] + [f"acc_{m}" for m in mods] if m in df]
        if df.empty or not metrics or df["group"].nunique() < 2:
            need(f"finished runs of at least two methods on `{PRESET}`")
        else:
            order = ["joint"] + sorted(g for g in df["group"].unique() if g != "joint" and not g.startswith("unimodal")) + \
                sorted(g for g in df["group"].unique() if g.startswith("unimodal"))
            df["group"] = pd.Categorical(df["group"], categories=order, ordered=True)
            st.plotly_chart(F.final_bars_figure(df, metrics, title=f"Final test accuracy on `{PRESET}` (mean ± std over seeds)"), key="learn.methods")
            st.caption("Missing a method? Only methods with finished runs in the gallery appear here.")
else:
    st.markdown(
        "Train a small run yourself (about half a minute on a laptop CPU) and watch it live: pick a method, press **Try it**, "
        "and the Live page opens on your run."
    )
    choices = sorted(METHODS)
    mcol, bcol = st.columns([2, 1])
    chosen = mcol.selectbox("Method", choices, index=choices.index("joint") if "joint" in choices else 0, key="learn.try.method")
    if bcol.button("Try it", type="primary", icon=":material/play_arrow:", key="learn.try"):
        raw = {"data": {"name": "synthetic", "preset": PRESET, "n_train": 1000, "n_test": 500},
               "method": {"name": chosen}, "epochs": 8, "model": {"hidden": 64, "embed_dim": 32},
               "log": {"progress": False}}
        try:
            started = launch(raw, [0], q.roots().runs_dir)
        except ModalScopeError as e:
            st.error(str(e))
        else:
            key = q.run_key("runs", started[0].name)
            st.session_state["launched"] = st.session_state.get("launched", []) + [key]
            st.session_state["live.run"] = key
            st.switch_page("views/live.py", query_params={"run": key})



def _next() -> None:
    st.session_state["learn.step"] = STEPS[min(i + 1, len(STEPS) - 1)]


if i < len(STEPS) - 1:
    st.button("Next →", key="learn.next", on_click=_next)
