"""Dashboard entry point: ``streamlit run dashboard/app.py -- --runs-dir runs --sample-runs sample_runs``.

``modalscope dashboard`` / ``make dashboard`` start it bound to 127.0.0.1. The pages live in
``dashboard/views/`` (Streamlit's ``st.navigation``); they read runs only through
``dashboard/queries.py`` (which wraps ``modalscope.store``) and draw with ``dashboard/figures.py``.
Runs roots come from the command line, else ``MODALSCOPE_RUNS_DIR`` /
``MODALSCOPE_SAMPLE_RUNS``, else ``runs`` and ``sample_runs``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import streamlit as st  # noqa: E402



# Live views refresh every half second (queries.LIVE_REFRESH_SECONDS): keep the previous frame fully visible while the next one
# renders, instead of Streamlit's default fading of "stale" elements.
CSS = ("<style>.block-container {padding-top: 3.2rem; padding-bottom: 2rem;} h1 {padding-top: 0.2rem;} "
       "[data-stale='true'] {opacity: 1 !important; transition: none !important;}</style>")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--runs-dir", default=os.environ.get("MODALSCOPE_RUNS_DIR", "runs"))
    p.add_argument("--sample-runs", default=os.environ.get("MODALSCOPE_SAMPLE_RUNS", "sample_runs"))
    args, _ = p.parse_known_args(argv)
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    # A local icon: a Material icon name would make the browser fetch it from fonts.gstatic.com.
    st.set_page_config(page_title="ModalScope", page_icon=str(Path(__file__).resolve().parent / "icon.png"), layout="wide")
    st.session_state["_roots"] = {"runs_dir": args.runs_dir, "sample_runs": args.sample_runs}
    st.markdown(CSS, unsafe_allow_html=True)
    here = Path(__file__).resolve().parent
    pages = [
        st.Page(here / "views" / "runs.py", title="Runs", icon=":material/table_rows:", default=True),
        st.Page(here / "views" / "launch.py", title="Launch", icon=":material/rocket_launch:"),
        st.Page(here / "views" / "live.py", title="Live", icon=":material/monitoring:"),
        st.Page(here / "views" / "compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page(here / "views" / "learn.py", title="Learn", icon=":material/school:"),
    ]
    nav = st.navigation(pages)
    with st.sidebar:
        st.markdown("**ModalScope** · modality imbalance, visible")
        st.caption(f"runs: `{args.runs_dir}` · gallery: `{args.sample_runs}`")
    nav.run()


main()
