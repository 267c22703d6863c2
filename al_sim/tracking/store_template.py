"""An empty MLflow sqlite store kept per MLflow version, copied rather than built anew.

MLflow builds a new store by running every schema migration since its first (1-1.5 s of CPU
before a run's first round); opening a copy of an empty store of the same version takes
0.04 s. The first store built with an MLflow version is kept (in ``~/.cache/al_sim``:
:func:`template_path`), less its default experiment; later new stores start as a copy of it,
opened once (MLflow checks its schema and adds the default experiment, with the store's own
artifact location). Anything wrong with the kept copy (missing, unreadable, damaged, used,
another schema) means the store is built as before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.version import VERSION
from sqlalchemy.exc import SQLAlchemyError

from al_sim.runtime.files import atomic_write


def template_path() -> Path | None:
    """Where this MLflow version's empty store is kept: ``$AL_SIM_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/al_sim``, else ``~/.cache/al_sim`` (None: no home folder)."""
    folder = os.environ.get("AL_SIM_CACHE_DIR")
    if not folder:
        xdg = os.environ.get("XDG_CACHE_HOME")
        try:
            folder = str((Path(xdg) if xdg else Path.home() / ".cache") / "al_sim")
        except RuntimeError:  # no HOME and no password entry
            return None
    return Path(folder) / f"mlflow-{VERSION}-empty-store.db"


def build_empty_store(path: Path) -> None:
    """Make ``path`` (an empty file) an empty MLflow store: a copy of the kept one, or built
    by MLflow and then kept for the next."""
    template = template_path()
    if template is not None and _copied(template, path):
        return
    _open(path)
    if template is not None:
        with contextlib.suppress(OSError, sqlite3.Error):  # a read-only or full home, say:
            atomic_write(template, _without_experiments(path))  # the next store is built too


def _open(path: Path) -> None:
    """Open the store in ``path`` as MLflow does (building it in an empty file, checking the
    schema of any other), then let its file go."""
    MlflowClient(tracking_uri=f"sqlite:///{path}")._tracking_client.store.engine.dispose()


def _without_experiments(path: Path) -> bytes:
    """The store in ``path`` less its default experiment, which MLflow creates when a store
    lacks it (a copy then gets its own artifact location, below its own folder, and time)."""
    con = sqlite3.connect(":memory:")
    try:
        con.deserialize(path.read_bytes())
        con.execute("DELETE FROM experiments")
        con.commit()
        return con.serialize()
    finally:
        con.close()


def _copied(template: Path, path: Path) -> bool:
    """Whether ``path`` is now a copy of ``template`` that MLflow opens; else it is left empty."""
    try:
        shutil.copyfile(template, path)
    except OSError:
        return False
    try:
        if _holds_nothing(path):
            _open(path)
            return True
    except (MlflowException, SQLAlchemyError, sqlite3.Error):
        pass
    path.write_bytes(b"")  # MLflow builds a store in an empty file
    template.unlink(missing_ok=True)
    return False


def _holds_nothing(path: Path) -> bool:
    """Whether the store in ``path`` has its tables but no run and no experiment."""
    return count_rows(path, "runs", "experiments") == {"runs": 0, "experiments": 0}


def count_rows(path: Path, *tables: str) -> dict[str, int | None]:
    """Rows of each of ``tables`` in the sqlite file ``path``, read-only (never creating one);
    None for a table it lacks. sqlite3 errors as they come."""
    con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        held = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] if t in held else None
                for t in tables}
    finally:
        con.close()
