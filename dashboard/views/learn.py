"""Learn: a guided walk-through of modality imbalance on the shipped sample runs.

Runs are found by their config (``method.name``, ``method.modality``, ``data.preset``),
never by folder name; a step whose runs are missing says which runs it needs and how to make
them, and the rest of the walk-through still works. Every number and verdict in the text is
computed from the runs shown (``dashboard/lessons.py``); the weak modality is found from the
data, not assumed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from modalscope.errors import ModalScopeError
from modalscope.methods.base import _REGISTRY as METHODS
from modalscope.dashboard import comparison as CMP
from modalscope.dashboard import figures as F
from modalscope.dashboard import figures_compare as FC
from modalscope.dashboard import figures_learn as FL
from modalscope.dashboard import lessons as LS
from modalscope.dashboard import queries as q
from modalscope.dashboard import summaries as S
from modalscope.dashboard.learn_steps import CONTRAST, PRESET, STEPS, try_config, try_measured
from modalscope.dashboard.widgets import fmt_seconds

st.title(f"Learn: modality imbalance in {len(STEPS)} steps")
runs = q.runs_table()
cfgs = q.configs(runs) if not runs.empty else {}

if "learn.step" not in st.session_state:
    st.session_state["learn.step"] = STEPS[0]
step = st.radio("Step", STEPS, key="learn.step", horizontal=True, label_visibility="collapsed")
i = STEPS.index(step)


def need(what: str) -> None:
    st.info(f"This step needs {what} in the gallery. Regenerate it with `modalscope sample-runs --out sample_runs`, "
            "or train them on the Launch page (runs are found by method and preset, not by name).")


def pick(method: str, preset: str = PRESET, modality: str | None = None) -> pd.DataFrame:
    """Finished runs of ``method`` on ``preset`` (gallery ones when the gallery has any), seed order."""
    if runs.empty:
        return runs
    found = S.find_runs(runs, cfgs, method=method, preset=preset, modality=modality)
    if "source" in found and (found["source"] == "gallery").any():
        found = found[found["source"] == "gallery"]
    return found.sort_values(["seed", "name"], na_position="last")


def with_finals(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus the probe, utilisation and best-valid columns of each run's last logged values."""
    if df.empty:
        return df
    extra = pd.DataFrame([CMP.final_metric_columns(q.final_values(k, prefixes=CMP.FINAL_PREFIXES), mods) for k in df["key"]], index=df.index)
    return pd.concat([df.drop(columns=[c for c in extra.columns if c in df]), extra], axis=1)


def mean(df: pd.DataFrame, col: str) -> float:
    if df.empty or col not in df:
        return float("nan")
    v = pd.to_numeric(df[col], errors="coerce").dropna()
    return float(v.mean()) if len(v) else float("nan")


def curve(keys: list[str], metric: str, group: str) -> pd.DataFrame:
    frames = [q.scalars(k, names=[metric]).assign(run=k, group=group) for k in keys]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def seeds_note(df: pd.DataFrame) -> str:
    n = len(df)
    return f"{n} seed{'s' if n != 1 else ''}"


joint = pick("joint")
mods = ["audio", "visual"]
if not joint.empty:
    mods = q.meta(joint["key"].iloc[0]).get("modalities") or mods
joint = with_finals(joint)
alone_runs = {m: with_finals(pick("unimodal", modality=m)) for m in mods}
alone = {m: mean(df, "acc_fused") for m, df in alone_runs.items()}
weak, why = LS.weak_modality(alone, {m: mean(joint, f"util_{m}") for m in mods}, {m: mean(joint, f"acc_{m}") for m in mods})
if weak is None:
    st.warning(f"The gallery does not tell which modality is the weak one ({why}); the steps below assume *{mods[-1]}*. "
               f"Add `unimodal` runs of each modality on `{PRESET}` to find it from the data.")
    weak = mods[-1]
else:
    st.caption(f"Weak modality on the `{PRESET}` preset: **{weak}**, found from the runs: {why}.")
others = [m for m in mods if m != weak]
strong = max(others, key=lambda m: (alone.get(m, float("nan")) if np.isfinite(alone.get(m, float("nan"))) else -1.0, m)) if others else weak

if i == 0:
    st.markdown(
        "A **multimodal** model sees several inputs of the same thing (here an *audio* and a *visual* vector) and predicts one label. "
        "The bars show the best accuracy any model could reach from each input alone and from all of them together "
        "(the Bayes ceiling, computed from the true data distribution)."
    )
    any_run = joint if not joint.empty else (runs[runs["preset"] == PRESET] if not runs.empty else runs)
    bayes = (q.meta(any_run["key"].iloc[0]).get("reference") or {}).get("bayes") if not any_run.empty else None
    if bayes:
        st.plotly_chart(F.ceilings_figure(bayes), key="learn.ceilings")
        parts = ", ".join(f"*{m}* alone at most **{bayes[m]:.2f}**" for m in mods if m in bayes)
        if "fused" in bayes:
            st.markdown(f"On `{PRESET}`: {parts}; both together **{bayes['fused']:.2f}**. A model that uses both inputs well should get close to the last number.")
    else:
        need(f"any run on the `{PRESET}` preset")
elif i == 1:
    st.markdown(
        "Train one encoder per modality **on its own** (the `unimodal` method). This is the reference every multimodal run must be compared with: "
        "it tells us how much each modality *can* learn when nothing competes with it."
    )
    frames = [curve(list(df["key"]), "acc/test/fused", f"{m} alone") for m, df in alone_runs.items() if not df.empty]
    frames = [f for f in frames if not f.empty]
    if frames:
        st.plotly_chart(FL.modality_bands(pd.concat(frames), {f"{m} alone": m for m in mods}, "Unimodal training: test accuracy (mean ± std over seeds)",
                                          "test accuracy"), key="learn.uni")
        st.caption(" · ".join(f"{m} alone: {seeds_note(df)}" for m, df in alone_runs.items() if not df.empty)
                   + ". Each modality keeps its colour on every step.")
        known = {m: v for m, v in alone.items() if np.isfinite(v)}
        if len(known) >= 2:
            st.markdown("Trained alone, " + ", ".join(f"*{m}* ends at **{v:.2f}**" for m, v in known.items())
                        + f" (test accuracy, last epoch, mean over seeds): *{weak}* is the weak modality here.")
    else:
        need("`unimodal` runs (method.modality = " + " and ".join(mods) + f") on `{PRESET}`")
elif i == 2:
    if joint.empty:
        need(f"a `joint` run on `{PRESET}`")
    else:
        first = joint.iloc[0]
        k = first["key"]
        fused_j, strong_alone = mean(joint, "acc_fused"), alone.get(strong, float("nan"))
        weak_in, weak_alone = mean(joint, f"acc_{weak}"), alone.get(weak, float("nan"))
        st.markdown(
            "Now train **jointly** (late fusion, one loss on the fused prediction) and read the per-modality heads against the dotted lines: "
            "what each modality reaches when trained alone."
        )
        acc = q.scalars(k, prefix="acc/test/")
        acc = acc[acc["name"].str.count("/") == 2]
        fig = F.accuracy_figure(acc, title=f"Joint training, one run ({first['name']}, seed {first['seed']}): test accuracy per head")
        FC.add_levels(fig, [FC.Level(f"{m} alone", v, m) for m, v in alone.items() if np.isfinite(v)])
        st.plotly_chart(fig, key="learn.joint")
        st.caption(f"The chart is one run (seed {first['seed']}); the numbers below are means over the {seeds_note(joint)} of `joint` "
                   "and of each `unimodal` reference.")
        c1, c2 = st.columns(2)
        if np.isfinite(fused_j) and np.isfinite(strong_alone):
            c1.metric(f"fused (joint) vs {strong} alone", f"{fused_j:.2f}", f"{fused_j - strong_alone:+.2f} vs {strong} alone")
        if np.isfinite(weak_in) and np.isfinite(weak_alone):
            c2.metric(f"{weak} head inside joint vs alone", f"{weak_in:.2f}", f"{weak_in - weak_alone:+.2f} vs alone")
        if np.isfinite(fused_j) and np.isfinite(strong_alone) and np.isfinite(weak_in) and np.isfinite(weak_alone):
            close = abs(fused_j - strong_alone) <= 0.03
            st.markdown(
                f"The fused model ends at **{fused_j:.2f}**, {'about' if close else ('above' if fused_j > strong_alone else 'below')} "
                f"what *{strong}* reaches alone ({strong_alone:.2f}); the *{weak}* head ends at **{weak_in:.2f}** against {weak_alone:.2f} alone. "
                + ("Adding the second modality bought almost nothing. " if close else "")
                + f"Is the *{weak}* encoder learning less than it could? The next step looks inside it."
            )
elif i == 3:
    st.markdown(
        f"A head's accuracy mixes two things: what the **encoder** learnt and what the fused model asks of it. To see the encoder itself, freeze it and fit "
        f"a linear classifier on its features (a **probe**). Its accuracy is compared with the same encoder at initialisation and trained alone; "
        f"**utilisation** = (probe − probe at init) / (probe alone − probe at init): 1 = learns as much as alone, 0 = nothing."
    )
    col = f"probe_{weak}"
    rows = []
    on_preset = runs[(runs["preset"] == PRESET) & (runs["status"] == "finished")] if not runs.empty else runs
    if not on_preset.empty:
        on_preset = with_finals(on_preset.assign(group=[S.method_label(cfgs.get(k, {})) for k in on_preset["key"]]))
        if "source" in on_preset and (on_preset["source"] == "gallery").any():
            on_preset = on_preset[on_preset["source"] == "gallery"]
    has = not on_preset.empty and col in on_preset and pd.to_numeric(on_preset[col], errors="coerce").notna().any()
    if not has:
        need(f"runs on `{PRESET}` that log the encoder probe (`probe/test/{weak}`: the probe diagnostics), including `joint` and `unimodal` on {weak}")
    else:
        init = mean(on_preset[on_preset["group"] == "joint"], f"probe_init_{weak}")
        order = ["joint"] + sorted({g for g in on_preset["group"] if g != "joint" and not str(g).startswith("unimodal")},
                                   key=lambda g: -mean(on_preset[on_preset["group"] == g], col)) + [f"unimodal:{weak}"]
        for g in order:
            sub = on_preset[on_preset["group"] == g]
            mu, sd, n = CMP.mean_std(sub[col]) if not sub.empty else (float("nan"), float("nan"), 0)
            if n:
                rows.append({"label": f"{weak} alone" if g == f"unimodal:{weak}" else g, "mean": mu, "std": sd, "n": n,
                             "util": mean(sub, f"util_{weak}")})
        bars = pd.DataFrame(rows)
        levels = [FC.Level("at initialisation", init, "total")] if np.isfinite(init) else []
        alone_probe = bars.loc[bars["label"] == f"{weak} alone", "mean"]
        if not alone_probe.empty:
            levels.append(FC.Level("trained alone", float(alone_probe.iloc[0]), weak))
        st.plotly_chart(FL.probe_bars_figure(bars, weak, levels, f"How much the {weak} encoder learnt: linear probe on its frozen features (mean ± std over seeds)"),
                        key="learn.probe")
        uj = mean(on_preset[on_preset["group"] == "joint"], f"util_{weak}")
        methods = bars[~bars["label"].isin(["joint", f"{weak} alone"])]
        text = []
        pj = bars.loc[bars["label"] == "joint", "mean"]
        if not pj.empty and np.isfinite(uj):
            text.append(f"Under `joint` the {weak} encoder's probe reaches **{float(pj.iloc[0]):.2f}**: utilisation **{uj:.2f}**, "
                        f"it learns {uj:.0%} of what it learns alone.")
            kind = LS.shortfall_kind(mean(joint, f"acc_{weak}"), alone.get(weak, float("nan")), uj)
            if kind == "suppression":
                text.append("The encoder itself is starved: this is the **suppression** the literature calls modality imbalance.")
            elif kind == "specialisation":
                text.append("The encoder learnt about as much as alone: a low head here would be specialisation, not suppression (step 8).")
        if not methods.empty and methods["util"].notna().any():
            best = methods.loc[methods["util"].idxmax()]
            text.append(f"The method that recovers it most, `{best['label']}`, brings it to **{best['mean']:.2f}** (utilisation **{best['util']:.2f}**).")
            rebal = methods[(methods["label"] != "ensemble") & methods["util"].notna()]
            if best["label"] == "ensemble" and not rebal.empty:
                b2 = rebal.loc[rebal["util"].idxmax()]
                text.append(f"(`ensemble` trains each encoder on its own loss, so it recovers it by construction; among the rebalancing methods "
                            f"`{b2['label']}` goes furthest: **{b2['mean']:.2f}**, utilisation **{b2['util']:.2f}**.)")
        if text:
            st.markdown(" ".join(text))
elif i == 4:
    st.markdown(
        "Why does the weak modality learn less? Look at **where the gradient goes**: the share of the encoders' gradient norm each one receives "
        f"(1/{len(mods)} each would be even)."
    )
    if joint.empty:
        need(f"a `joint` run on `{PRESET}`")
    else:
        first = joint.iloc[0]
        share = q.scalars(first["key"], prefix="grad_share/")
        if share.empty:
            st.caption("_The joint run has no gradient shares (diagnostics.grad was off)._")
        else:
            fig = F.scalar_lines(share, f"Joint training ({first['name']}): share of the gradient per encoder", "share of ‖g‖", smoothing=0.8,
                                 prefix="grad_share/")
            FC.add_levels(fig, [FC.Level("even share", 1 / len(mods), "total")])
            st.plotly_chart(fig, key="learn.share")
            story = LS.gradient_share_story(share[share["name"] == f"grad_share/{weak}"], weak, strong)
            if story:
                st.markdown(f"In this run: {LS.gradient_share_text(story, weak, strong)} "
                            "The gradient an encoder receives is what it learns from; compare with its probe on step 4.")
elif i == 5:
    st.markdown(
        "Imbalance is also visible **per sample**. For each sample, the *modality gap* is how much more confident one modality's head is than the other's on the true class. "
        "When a subset of samples has a broken modality (the `noisy` preset), the gap histogram splits in two; a 2-component Gaussian mixture finds that split and "
        "methods such as GMM-adaptive use it to treat the two groups differently."
    )
    cand = pick("joint", preset="noisy")
    cand = cand if not cand.empty else joint
    shown = False
    for _, r in cand.iterrows():
        h = q.table(r["key"], "histograms")
        if h is None or h.empty:
            continue
        split = "test" if (h["split"] == "test").any() else h["split"].iloc[-1]
        row = h[h["split"] == split].iloc[-1]
        g = q.table(r["key"], "gmm")
        gr = None
        if g is not None and not g.empty:
            gg = g[(g["epoch"] == row["epoch"]) & (g["split"] == split) & (g["name"] == row["name"])]
            gr = gg.iloc[-1].to_dict() if not gg.empty else None
        preset = cfgs.get(r["key"], {}).get("data", {}).get("preset", "")
        st.plotly_chart(F.gap_histogram_figure(row.to_dict(), gr, gap_label=f"gap {row['name']}",
                                               title=f"{r['name']}: modality gap {row['name']}, {split} split, epoch {int(row['epoch']) + 1}"),
                        key="learn.gap")
        if gr is not None and len(gr["weights"]) == 2:
            u = 1 - int(gr["balanced"])
            thr = gr.get("threshold")
            st.markdown(
                f"Run `{r['name']}` (`joint` on `{preset}`): the mixture puts **{gr['weights'][u]:.0%}** of the samples in a component centred at "
                f"{gr['means'][u]:+.2f} and the rest around {gr['means'][1 - u]:+.2f}"
                + (f"; the dotted line at **{float(thr):+.2f}** is the gap where a sample becomes more likely to belong to the first." if thr is not None and np.isfinite(thr) else "; the two components do not cross between their means (no threshold).")
            )
        shown = True
        break
    if not shown:
        need("a `joint` run with modality-gap histograms (preset `noisy` shows the two groups best)")
elif i == 6:
    st.markdown(
        f"Each rebalancing method changes training so the weak modality keeps learning: some slow down the dominant encoder's gradient (OGM-GE), some add "
        f"unimodal losses or reweight samples. The test of a method: **raise the weak modality (*{weak}*) without losing fused accuracy**."
    )
    on_preset = runs[(runs["preset"] == PRESET) & (runs["status"] == "finished")].copy() if not runs.empty else runs
    if not on_preset.empty and (on_preset["source"] == "gallery").any():
        on_preset = on_preset[on_preset["source"] == "gallery"]
    df = with_finals(on_preset.assign(group=[S.method_label(cfgs.get(k, {})) for k in on_preset["key"]])) if not on_preset.empty else on_preset
    metrics = [m for m in ["acc_fused"] + [f"acc_{m}" for m in mods] if m in df]
    if df.empty or not metrics or df["group"].nunique() < 2:
        need(f"finished runs of at least two methods on `{PRESET}`")
    else:
        order = ["joint"] + sorted(g for g in df["group"].unique() if g != "joint" and not g.startswith("unimodal")) + \
            sorted(g for g in df["group"].unique() if g.startswith("unimodal"))
        bars = df.assign(group=pd.Categorical(df["group"], categories=order, ordered=True))
        levels = [FC.Level(f"{m} alone", v, m) for m, v in alone.items() if np.isfinite(v)]
        st.plotly_chart(FC.levels_bars_figure(bars, metrics, levels, title=f"Final test accuracy on {PRESET} (mean ± std over seeds)"), key="learn.methods")
        measure, label = LS.weak_measure([c for c in df.columns if pd.to_numeric(df[c], errors="coerce").notna().any()], weak)
        df["ref"] = CMP.pair_with_reference(df.assign(method=df["group"]))
        judged = df[~df["group"].astype(str).str.startswith("unimodal")]
        v = LS.verdicts(judged, measure, "acc_fused") if measure else pd.DataFrame()
        if v.empty:
            st.caption("_No method has a `joint` run with the same seed to be paired with: the test cannot be applied._")
        else:
            fmt = lambda d, lo, hi, n: CMP.format_delta(d, lo, hi, n)  # noqa: E731
            table = pd.DataFrame({
                "method": v["group"].astype(str),
                "Δ fused vs joint": [fmt(*a) for a in zip(v["d_fused"], v["d_fused_low"], v["d_fused_high"], v["n_pairs"])],
                f"Δ {label} vs joint": [fmt(*a) for a in zip(v["d_weak"], v["d_weak_low"], v["d_weak_high"], v["n_pairs"])],
                f"raises {weak}": v["raises"].map({True: "yes", False: "no"}),
                "keeps fused": v["keeps"].map({True: "yes", False: "no"}),
                "passes": v["passes"].map({True: "✓ passes", False: "✗ fails"}),
            }).sort_values(["passes", "method"])
            st.dataframe(table, hide_index=True, key="learn.verdicts")
            passed = list(v.loc[v["passes"], "group"].astype(str))
            st.markdown(
                (f"**Pass the test on `{PRESET}`:** " + ", ".join(f"`{m}`" for m in sorted(passed)) + "." if passed else f"**No method passes the test on `{PRESET}`.**")
                + f" Measured by the {label}, paired with `joint` by seed."
            )
            st.caption(f"Raises {weak}: the mean paired difference is positive and its 95 % t-interval lies above 0 (with ≥ 2 seeds). "
                       f"Keeps fused: the mean paired difference of fused test accuracy is at least −{LS.FUSED_TOLERANCE:.2f}.")
elif i == 7:
    st.markdown(
        f"A head below its trained-alone accuracy is not always suppression. On the `{CONTRAST}` preset each modality carries class information the other lacks, "
        f"so the fused model needs the *{weak}* branch only for what *{strong}* cannot tell, and the *{weak}* head alone can score low although its encoder "
        "keeps everything the fused model needs from it. Probes tell the two cases apart, best per latent bit of the class code."
    )
    rows, kinds = [], {}
    for preset in (PRESET, CONTRAST):
        j = with_finals(pick("joint", preset=preset))
        a = with_finals(pick("unimodal", preset=preset, modality=weak))
        if j.empty or a.empty:
            continue
        vals = {"head (joint)": mean(j, f"acc_{weak}"), "head (alone)": mean(a, "acc_fused"),
                "probe (joint)": mean(j, f"probe_{weak}"), "probe (alone)": mean(a, f"probe_{weak}")}
        rows += [{"preset": preset, "measure": k, "value": v} for k, v in vals.items() if np.isfinite(v)]
        jf = pd.DataFrame([q.final_values(k, "probe") for k in j["key"]]).mean(numeric_only=True).to_dict()
        af = pd.DataFrame([q.final_values(k, "probe") for k in a["key"]]).mean(numeric_only=True).to_dict()
        bits = LS.bit_utilisation(jf, af, weak)
        u = mean(j, f"util_{weak}")
        kinds[preset] = (LS.shortfall_kind(vals["head (joint)"], vals["head (alone)"], u, bits), vals, u, bits,
                         {b: jf.get(f"probe/bit/{strong}/{b}", np.nan) for b in bits})
    if CONTRAST not in kinds:
        need(f"`joint` and `unimodal` ({weak}) runs on `{CONTRAST}`")
    else:
        bit_rows = [{"preset": p, "bit": b, "utilisation": u} for p, k in kinds.items() for b, u in k[3].items()]
        c1, c2 = st.columns(2) if bit_rows else (st.container(), None)
        with c1:
            st.plotly_chart(FL.shortfall_figure(pd.DataFrame(rows), weak, f"The {weak} head and encoder, inside joint and alone"), key="learn.contrast")
        if c2 is not None:
            with c2:
                st.plotly_chart(FL.bit_utilisation_figure(pd.DataFrame(bit_rows), weak, f"The {weak} encoder under joint, per bit of the class code"),
                                key="learn.bits")
        for preset, (kind, vals, u, bits, strong_bits) in kinds.items():
            util = f", utilisation {u:.2f}" if np.isfinite(u) else ""
            per_bit = ("; per bit " + ", ".join(f"{b}: {x:.2f}" for b, x in bits.items())) if bits else ""
            if kind == "specialisation" and bits:
                kept = [b for b, x in bits.items() if x >= LS.LEARNT]
                other = ", ".join(f"{strong_bits[b]:.2f}" for b in kept if np.isfinite(strong_bits.get(b, np.nan)))
                verdict = (f"**specialisation**: the encoder keeps bit {', '.join(map(str, kept))} as well as alone"
                           + (f" (*{strong}*'s encoder predicts it at {other})" if other else "") + " and lets the rest go")
            else:
                verdict = {"suppression": "**suppression**: the encoder learnt little" + (", on every bit" if bits and max(bits.values()) <= LS.STARVED else ""),
                           "specialisation": "**specialisation**: the encoder learnt about as much as alone, the head is low by design",
                           "partial": "partly suppressed", "none": "no shortfall", "unknown": "not decidable (no probe logged)"}[kind]
            st.markdown(f"- `{preset}`: {weak} head {vals['head (joint)']:.2f} inside joint vs {vals['head (alone)']:.2f} alone; "
                        f"probe {vals['probe (joint)']:.2f} vs {vals['probe (alone)']:.2f}{util}{per_bit} → {verdict}.")
        st.caption("Per-bit utilisation = (probe of bit b − at init) / (probe of bit b trained alone − at init), on the synthetic class code. "
                   "A rebalancing method helps against suppression; against specialisation it can only force each branch to predict what it barely sees.")
else:
    measured = try_measured()
    cfg = try_config()
    ended = (measured or {}).get("ended") or {}
    shows = (abs(ended.get("fused", np.nan) - ended.get(f"{strong} alone", np.nan)) <= 0.03
             and ended.get(f"{weak} utilisation", np.nan) <= LS.STARVED)
    st.markdown(
        f"Train the gallery's `joint` run on `{PRESET}` (seed 0, {cfg['epochs']} epochs) yourself and watch it live: press **Try it** and the Live page opens on your run. "
        + (f"Watch the fused accuracy settle near *{strong}* alone while the *{weak}* encoder's probe stays low; "
           if shows else f"Compare its fused accuracy with *{strong}* alone and its *{weak}* probe with the trained-alone level; ")
        + "then try a method that passed step 7's test."
    )
    if measured:
        cpu = f" ({fmt_seconds(measured['cpu_s'])} of CPU time; load {measured['load_1min']:.1f})" if "cpu_s" in measured else ""
        st.caption(f"Measured by `benchmarks/learn_try.py`: it took {fmt_seconds(measured['wall_s'])}{cpu} on {measured.get('machine', 'a CPU')} "
                   "and ended with " + ", ".join(f"{k} {v:.2f}" for k, v in ended.items()) + ".")
    else:
        st.caption("Its duration has not been measured on this checkout (run `python -m benchmarks.learn_try`).")
    choices = sorted(METHODS)
    mcol, bcol = st.columns([2, 1])
    chosen = mcol.selectbox("Method", choices, index=choices.index("joint") if "joint" in choices else 0, key="learn.try.method")
    if bcol.button("Try it", type="primary", icon=":material/play_arrow:", key="learn.try"):
        from modalscope.launcher import launch

        try:
            started = launch(try_config(chosen), [0], q.roots().runs_dir)
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
