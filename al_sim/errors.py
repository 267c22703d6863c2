"""User-facing errors: each message names the problem and the fix."""


class ALSimError(Exception):
    """Base class of every error al_sim reports as one clear line (no traceback)."""


class ConfigError(ALSimError):
    """A configuration value is invalid or inconsistent."""


class BudgetError(ConfigError):
    """The labelling budget does not fit the pool."""


class DataError(ALSimError):
    """A dataset file or folder is missing, unreadable or malformed."""


class TrackingError(ALSimError):
    """The tracking store cannot be reached or written."""


class LabelsIncompleteError(ALSimError):
    """A human oracle's batch is only partly labelled (the run keeps waiting)."""


class AlreadyFinishedError(ALSimError):
    """The run directory holds a finished run."""


class LabelError(ALSimError):
    """An expert's label, or a file of labels, is refused (nothing is written)."""


def error_message(exc: BaseException) -> str:
    """The ``error`` tag of a run that ended with ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({exc or 'Ctrl-C'})"
    return storable(f"{type(exc).__name__}: {exc}")


def storable(text: str) -> str:
    """``text`` as valid UTF-8: a non-UTF-8 file name's bytes escaped (``\\udce9``)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
