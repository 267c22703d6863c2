"""User-facing errors: each message names the problem and the fix."""

import errno

EXIT_USER_ERROR = 2  # the exit status of a run refused with one ``error:`` line


def one_line(text: str) -> str:
    """``text`` as the one line a user reads: a library's message quoted in ours may span
    several."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class ALSimError(Exception):
    """Base class of every error al_sim reports as one clear line (no traceback)."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class ConfigError(ALSimError):
    """A configuration value is invalid or inconsistent."""


class BudgetError(ConfigError):
    """The labelling budget does not fit the pool."""


class DataError(ALSimError):
    """A dataset file or folder is missing, unreadable or malformed."""


class TrackingError(ALSimError):
    """The tracking store cannot be reached or written."""


class ClusterError(ALSimError):
    """A cluster a launcher needs (Ray, SLURM) cannot be reached."""


class LabelsIncompleteError(ALSimError):
    """A human oracle's batch is only partly labelled (the run keeps waiting)."""


class AlreadyFinishedError(ALSimError):
    """The run directory holds a finished run."""


class LabelError(ALSimError):
    """An expert's label, or a file of labels, is refused (nothing is written)."""


# torch's CPU and CUDA messages, and Python's for a thread whose stack did not fit (under the
# memory cap, which counts stacks; a limit on processes says the same)
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "can't start new thread")


def out_of_memory(exc: BaseException) -> str | None:
    """For an allocation failure (numpy, torch on the CPU or a GPU): what to say; else None."""
    if not isinstance(exc, MemoryError) and not (
            isinstance(exc, RuntimeError) and any(t in str(exc) for t in OUT_OF_MEMORY)):
        return None
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return (f"out of memory: {first}; lower trainer.batch_size, trainer.eval_batch_size or "
            "dataset.image_size, use a smaller model, or let the pool stay on disk "
            "(dataset.in_memory_max_mb=0 memory-maps MedMNIST+ archives); a CPU run stops at "
            "trainer.memory_limit_fraction of the memory")


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space, or the user's quota spent
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def os_error_line(exc: OSError, elsewhere: str) -> str:
    """One ``error:`` line for a failed file operation: the system's reason, the file, the fix.

    ``elsewhere`` says how this command is pointed at another folder (``set output_dir=``).
    """
    name = f": {exc.filename}" if exc.filename else ""
    if exc.errno in DISK_FULL:
        fix = f"free space on that disk, or {elsewhere} on another one"
    elif exc.errno in _DENIED:
        fix = f"make it writable for this user, or {elsewhere} elsewhere"
    else:
        fix = f"check that the path exists and is writable, or {elsewhere} elsewhere"
    return storable(f"error: {exc.strerror or exc}{name}; {fix}")


def error_message(exc: BaseException) -> str:
    """The ``error`` tag of a run that ended with ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({exc or 'Ctrl-C'})"
    return storable(out_of_memory(exc) or f"{type(exc).__name__}: {exc}")


def storable(text: str) -> str:
    """``text`` as valid UTF-8: a non-UTF-8 file name's bytes escaped (``\\udce9``)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")

