"""ModalScope Streamlit dashboard: pages read runs through core.store; figures are pure functions."""
