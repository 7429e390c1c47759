"""Dashboard entry point (``streamlit run dashboard/app.py -- --runs-dir runs --sample-runs sample_runs``)."""

from __future__ import annotations

import argparse
import sys

import streamlit as st

from core.store import list_runs


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--sample-runs", default="sample_runs")
    args, _ = p.parse_known_args(argv)
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    st.set_page_config(page_title="ModalScope", layout="wide")
    st.title("ModalScope")
    st.caption("Modality imbalance, visible and measurable.")
    df = list_runs(args.runs_dir, args.sample_runs)
    if df.empty:
        st.info(f"No runs yet under {args.runs_dir} or {args.sample_runs}. Start one with `modalscope train`.")
    else:
        st.dataframe(df, hide_index=True)


main()
