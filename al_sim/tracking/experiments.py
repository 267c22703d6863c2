"""The MLflow experiment a run or a sweep logs into: found or created, active, and keeping its
artifacts where they were asked for and where this user can write them.

An experiment's artifact location is fixed when it is created: ``tracking.artifact_location``
set later, or a folder that became read-only, would otherwise show only at the first upload,
as a failure of the store, after the run was created.
"""

from __future__ import annotations

import tempfile

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from al_sim.runtime.errors import TrackingError
from al_sim.tracking.contract import local_folder, redact

NEW_EXPERIMENT = "tracking.experiment=<a new name>"


def same_location(stored: str, configured: str) -> bool:
    """Whether an experiment's artifact location is the configured one (a path or URI)."""
    here, there = local_folder(stored), local_folder(configured)
    if here is not None and there is not None:
        return here.resolve() == there.resolve()
    return stored.rstrip("/") == configured.rstrip("/")


def check_writable_folder(location: str, name: str, exists: bool) -> None:
    """TrackingError, with the fix, when experiment ``name``'s local artifact folder cannot be
    made or written by this user (created here if missing, as the first upload would)."""
    folder = local_folder(location)
    if folder is None:
        return
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(20, "a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".al_sim_write_check"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        fix = (f"an experiment's artifact location is fixed when it is created: log into a new "
               f"one, {NEW_EXPERIMENT} with tracking.artifact_location=<a folder this user can "
               f"write>, or make {folder} writable" if exists else
               "set tracking.artifact_location=<a folder this user can write>")
        raise TrackingError(f"cannot write the artifacts of experiment '{name}' in {folder} "
                            f"({reason}); {fix}") from None


def experiment_id(client: MlflowClient, name: str, location: str | None,
                  configured: bool = False) -> str:
    """The id of experiment ``name``, created (its artifacts at ``location``) if missing.

    TrackingError, with the fix, when it is deleted, when it keeps its artifacts somewhere
    other than a ``configured`` location (``tracking.artifact_location``), or in a local folder
    this user cannot write."""
    found = client.get_experiment_by_name(name)
    if found is None:
        if location is not None:
            check_writable_folder(location, name, exists=False)
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            found = client.get_experiment_by_name(name)  # another process created it meanwhile
            if found is None:
                raise
    if found.lifecycle_stage != "active":
        raise TrackingError(
            f"experiment '{name}' is deleted in {redact(client.tracking_uri)} (MLflow keeps it "
            f"in its trash, and its name); restore it, MLFLOW_TRACKING_URI="
            f"{redact(client.tracking_uri)} mlflow experiments restore --experiment-id "
            f"{found.experiment_id}, or log into another, {NEW_EXPERIMENT}")
    stored = found.artifact_location
    if configured and location is not None and not same_location(stored, location):
        raise TrackingError(
            f"experiment '{name}' keeps its artifacts at {stored}, not at "
            f"tracking.artifact_location={location} (an experiment's artifact location is "
            f"fixed when it is created); log into a new experiment, {NEW_EXPERIMENT}, or "
            f"leave tracking.artifact_location unset")
    check_writable_folder(stored, name, exists=True)
    return found.experiment_id
