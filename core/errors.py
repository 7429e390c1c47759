"""User-facing errors.

Every problem a user can cause (bad config, bad data file, bad run name, a run that
cannot be resumed) is raised as a :class:`ModalScopeError` whose message is one line
naming the problem. The CLI prints that line and exits with status 2, never a traceback.
"""


class ModalScopeError(Exception):
    """A problem with user input, reported as a single line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(ModalScopeError):
    """Invalid run configuration."""


class DataError(ModalScopeError):
    """Invalid or missing data files."""


class StoreError(ModalScopeError):
    """A run folder or its store cannot be used."""


class TrainingError(ModalScopeError):
    """Training stopped for a reason the user must see (e.g. a non-finite loss)."""
