"""ModalScope core: training engine, data, models, methods, diagnostics, run store and CLI."""

__version__ = "0.1.0"
