"""Launch: the RunConfig as a form; one detached trainer process per seed, then Live."""

from __future__ import annotations

import streamlit as st

from modalscope.config import DiagnosticsConfig, LogConfig, ModelConfig, OptimConfig, RunConfig
from modalscope.data.base import _REGISTRY as DATASETS
from modalscope.errors import ModalScopeError
from modalscope.gallery import DEFAULT_EPOCHS
from modalscope.launcher import build_configs, launch, parse_seeds
from modalscope.methods.base import _REGISTRY as METHODS
from modalscope.dashboard import queries as q
from modalscope.dashboard.form import field_help, model_widgets

st.title("Launch a run")
st.caption("Every field is RunConfig (the same schema as `modalscope train --config`); hover a label for its meaning and range. "
           "Each seed starts its own trainer process, which keeps running if you close the page.")

errors: list[str] = []
raw: dict = {}


def ignored_knobs(dataset: str) -> tuple[str, ...]:
    """Knobs the chosen preset ignores: with no corruption (the preset's rate is 0 and none is
    typed), which modality and how it is corrupted change nothing, so they are not shown."""
    if dataset != "synthetic":
        return ()
    from modalscope.data.synthetic import PRESETS

    params = DATASETS[dataset].Params
    preset = st.session_state.get("launch.data.synthetic.preset", params.model_fields["preset"].default)
    typed = str(st.session_state.get("launch.data.synthetic.corrupt_rate", "") or "").strip()
    try:
        rate = float(typed) if typed else float(PRESETS.get(preset, {}).get("corrupt_rate", 0.0) or 0.0)
    except ValueError:
        return ()
    return () if rate > 0 else tuple(f for f in ("corrupt_modality", "corrupt_kind") if f in params.model_fields)

st.subheader("Data")
c1, c2 = st.columns([1, 3])
dataset = c1.selectbox("dataset", sorted(DATASETS), index=sorted(DATASETS).index("synthetic") if "synthetic" in DATASETS else 0,
                       key="launch.dataset", help="Registered data sources (core/data).")
hidden = ignored_knobs(dataset)
with c2:
    d_vals, e = model_widgets(f"data.{dataset}", DATASETS[dataset].Params, columns=3, skip=("name", *hidden),
                              labels={"seed": ("data seed", "Which samples are drawn: runs with the same data seed see the same "
                                                            "dataset, whatever their training seeds.")})
    if hidden:
        st.caption(f"Hidden: {', '.join(h.replace('_', ' ') for h in hidden)} — this preset corrupts no samples "
                   "(give a corrupt rate above 0 to set them).")
errors += e
raw["data"] = {"name": dataset, **d_vals}

modalities: list[str] | None = None
try:
    from modalscope.data.base import get_dataset

    params = DATASETS[dataset].Params.model_validate({"name": dataset, **d_vals})
    modalities = get_dataset(dataset).modalities(params)
except Exception:  # noqa: BLE001 - the full validation below reports the problem
    modalities = None

st.subheader("Method")
c1, c2 = st.columns([1, 3])
method_names = sorted(METHODS)
method = c1.selectbox("method", method_names, index=method_names.index("joint") if "joint" in method_names else 0, key="launch.method",
                      help="Training method (core/methods); see docs/methods.md for the formulas.")
doc = (METHODS[method].__doc__ or "").strip().splitlines()
if doc:
    c1.caption(doc[0])
with c2:
    m_vals, e = model_widgets(f"method.{method}", METHODS[method].Params, columns=3,
                              choices={"modality": modalities} if modalities else None)
errors += e
raw["method"] = {"name": method, **m_vals}

st.subheader("Training")
c = st.columns(5)
raw["epochs"] = int(c[0].number_input("epochs", value=DEFAULT_EPOCHS, step=1, key="launch.epochs",
                                      help=field_help(RunConfig.model_fields["epochs"]) + f" The README and the gallery use {DEFAULT_EPOCHS}."))
raw["batch_size"] = int(c[1].number_input("batch size", value=64, step=1, key="launch.batch_size", help=field_help(RunConfig.model_fields["batch_size"])))
seeds_text = c[2].text_input("training seeds", value="0", key="launch.seeds",
                             help="One run per training seed (weight initialisation and batch order): 0,1,2 or 0-2. "
                                  "The data seed above stays fixed, so these runs differ only in training.")
raw["device"] = c[3].selectbox("device", ["auto", "cpu", "cuda"], key="launch.device", help=field_help(RunConfig.model_fields["device"]))
name = c[4].text_input("run name (optional)", key="launch.name", help="Folder name under the runs root; several seeds get _s<seed>.")
if name.strip():
    raw["name"] = name.strip()

with st.expander("Model and optimiser"):
    v, e = model_widgets("model", ModelConfig, columns=3)
    raw["model"] = v
    errors += e
    v, e = model_widgets("optim", OptimConfig, columns=4)
    raw["optim"] = v
    errors += e
with st.expander("Diagnostics cadence"):
    v, e = model_widgets("diagnostics", DiagnosticsConfig, columns=4)
    raw["diagnostics"] = v
    errors += e
with st.expander("Logging"):
    v, e = model_widgets("log", LogConfig, columns=4, skip=("progress",))
    raw["log"] = {**v, "progress": False}
    errors += e

runs_dir = q.roots().runs_dir
problem = errors[0] if errors else None
seeds: list[int] = []
if problem is None:
    try:
        seeds = parse_seeds(seeds_text)
        cfgs = build_configs(raw, seeds[:1], runs_dir)
    except ModalScopeError as ex:
        problem = str(ex)

st.divider()
if problem:
    st.error(problem, icon=":material/error:")
else:
    st.success(f"Configuration valid · {len(seeds)} run(s) will start under `{runs_dir}`", icon=":material/check_circle:")

def data_problems(cfg) -> dict | None:
    """``modalscope data check`` on user data before anything starts (None for the generator)."""
    if cfg.data.name == "synthetic":
        return None
    from modalscope.data.check import check_dataset

    with st.spinner("Checking the data files…"):
        return check_dataset(cfg, max_items=64)


if st.button("Launch", type="primary", icon=":material/rocket_launch:", key="launch.go", disabled=problem is not None,
             help="Fix the error above first." if problem else None):
    report = None if problem else data_problems(cfgs[0])
    if problem:
        st.error(problem)
    elif report is not None and not report["ok"]:
        from modalscope.data.check import format_report

        st.error(f"Data check found {len(report['problems'])} problem(s); nothing was launched. First: {report['problems'][0]}",
                 icon=":material/error:")
        with st.expander("Data check report", expanded=True):
            st.code(format_report(report), language=None)
    else:
        try:
            started = launch(raw, seeds, runs_dir)
        except ModalScopeError as ex:
            st.error(str(ex))
        else:
            keys = [q.run_key("runs", s.name) for s in started]
            st.session_state["launched"] = list(dict.fromkeys(st.session_state.get("launched", []) + keys))
            st.session_state["live.run"] = keys[0]
            q._runs_table.clear()
            st.switch_page("views/live.py", query_params={"run": keys[0]})
