"""Adapters that wire :class:`modalscope.monitor.Monitor` into third-party training frameworks."""
