"""ModalScope Streamlit dashboard: pages read runs through modalscope.store; figures are pure functions."""
