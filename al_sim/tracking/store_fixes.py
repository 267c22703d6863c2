"""What to do about a tracking store that keeps failing: the fix an error line names."""

from __future__ import annotations

import importlib.util

from al_sim.runtime.errors import DISK_FULL
from al_sim.tracking.contract import local_folder, sqlite_file


def driver_fix(module: str | None) -> str:
    """How to get the database driver ``module`` a store URI asks for."""
    if module == "psycopg" and importlib.util.find_spec("psycopg2") is not None:
        # SQLAlchemy 2.1 reads postgresql:// as psycopg 3; al_sim's [server] extra has psycopg2
        return ("name the driver that is installed in the URI, postgresql+psycopg2://..., "
                "or pip install 'psycopg[binary]'")
    return "pip install the package that provides it"


def scheme_fix(uri: str, schemes: list[str]) -> str:
    """The error of a store URI whose scheme MLflow has no store for (``schemes``: those it has)."""
    named = ", ".join(f"{s}://" for s in schemes if s)
    return (f"tracking.uri={uri} is not a store MLflow can open (it opens {named} URIs); set "
            "tracking.uri=sqlite:///<dir>/mlflow.db or http://<host>:<port>, or set "
            "tracking.enabled=false")


def _disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) in DISK_FULL or any(
        full in str(exc) for full in ("disk is full", "No space left"))


def store_fix(uri: str, exc: BaseException) -> str:
    """What to do about a store that keeps failing: a full disk, a local file, MLflow's file
    store, or a server."""
    db = sqlite_file(uri)
    if _disk_full(exc):
        return (f"free space on the disk holding {db or 'the store'}, or set tracking.uri to a "
                "store on another disk")
    if db is not None:
        return f"check that {db} is an MLflow store this user can write, or set tracking.uri"
    if local_folder(uri) is not None:  # MLflow's file store: refused by default now
        return ("use a database store, tracking.uri=sqlite:///<dir>/mlflow.db (MLflow opens "
                "its file store only with MLFLOW_ALLOW_FILE_STORE=true)")
    return "check that the server is up and tracking.uri (or MLFLOW_TRACKING_URI) is right"


def artifact_fix(location: str, exc: BaseException) -> str:
    """What to do about a run's artifact location that cannot be written: a full disk, a
    local folder, or a remote artifact store."""
    if _disk_full(exc):
        return (f"free space on the disk holding {location}, or log into a new experiment "
                "(tracking.experiment) with tracking.artifact_location on another disk")
    if local_folder(location) is not None:
        return (f"check that {location} (the experiment's artifact location) is a folder this "
                "user can write")
    return (f"check that the artifact store {location} is reachable and this user can write "
            "it (its credentials in the environment)")
