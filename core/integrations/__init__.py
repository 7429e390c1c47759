"""Adapters that wire :class:`core.monitor.Monitor` into third-party training frameworks."""
