"""The MLflow writer: run lifecycle, per-round batched metrics, the run dir mirrored as artifacts.

Follows the MLflow contract (``al_sim.contract``): step = number of labelled
images, one ``log_batch`` call per round, and the run directory's result files
uploaded as they change. Also creates and closes a sweep's parent run.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from al_sim.contract import (
    ARTIFACTS,
    ERROR_TAG,
    FINAL_AULC,
    FINAL_N_ANNOTATED,
    GRIDS_DIR,
    N_LABELED,
    QUERY_S,
    ROUND,
    STOPPED_BY_TAG,
    TEST_KEYS,
    TRAIN_S,
    aulc_key,
    default_artifact_location,
    tracking_uri,
)
from al_sim.errors import TrackingError
from al_sim.events import ALResult, Callback, LoopState, RoundResult, RunInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

PARAM_BATCH = 100
PARAM_MAX_CHARS = 6000
TAG_MAX_CHARS = 5000
PARENT_TAG = "mlflow.parentRunId"
_TRANSIENT = ("database is locked", "connection", "timed out", "temporarily", "503", "502")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with the fix, when an http(s) tracking server does not answer."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise TrackingError(
            f"cannot reach the MLflow server at {uri} ({exc.strerror or exc}); start it "
            f"(mlflow server --host 127.0.0.1 --port {port}), fix tracking.uri, or set "
            "tracking.enabled=false"
        ) from exc


def error_message(exc: BaseException) -> str:
    """The ``error`` tag of a run that ended with ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return f"{type(exc).__name__}: {exc}"


class MLflowWriter(Callback):
    """Creates (or takes over) the MLflow run and logs every round as it ends."""

    key = "mlflow"

    def __init__(self, uri: str | None = None, experiment: str = "al_sim",
                 artifact_location: str | None = None, retries: int = 5) -> None:
        self.uri, self.experiment = uri or "", experiment
        self.artifact_location = artifact_location
        self.retries = retries
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.run_dir = Path(".")
        self._logged_steps: set[int] = set()  # rounds an interrupted attempt already logged
        self._uploaded: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime) when uploaded

    # ------------------------------------------------------------------ plumbing
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried with back-off on transient store errors."""
        return call_with_retries(what, fn, self.uri, self.retries)

    def _sync(self) -> None:
        """Upload the run directory's result files that are new or changed since last time."""
        files = [self.run_dir / name for name in ARTIFACTS]
        files += sorted((self.run_dir / GRIDS_DIR).glob("round_*.png"))
        for path in files:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            seen = (stat.st_size, stat.st_mtime_ns)
            if self._uploaded.get(path) == seen:
                continue
            sub = path.parent.relative_to(self.run_dir).as_posix()
            dest = None if sub == "." else sub
            self._call("artifact upload",
                       lambda p=path, d=dest: self.client.log_artifact(self.run_id, str(p), d))
            self._uploaded[path] = seen

    # ------------------------------------------------------------------ lifecycle
    def setup(self, run: RunInfo) -> None:
        self.uri = tracking_uri(self.uri or None, run.launch_dir)
        self.run_dir = Path(run.run_dir)
        check_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        earlier = None if run.resume is None else run.resume.callbacks.get(self.key, {})
        if earlier and earlier.get("run_id"):
            self._resume(str(earlier["run_id"]))
        else:
            self._start(run)
        self._sync()

    def _start(self, run: RunInfo) -> None:
        location = default_artifact_location(self.artifact_location, run.launch_dir)
        exp_id = self._call("experiment lookup", lambda: experiment_id(
            self.client, self.experiment, location))
        tags = dict(run.tags)
        if run.parent:
            tags[PARENT_TAG] = run.parent
        created = self._call("run creation", lambda: self.client.create_run(
            exp_id, run_name=run.name, tags=tags))
        self.run_id = created.info.run_id
        items = [Param(k, v[:PARAM_MAX_CHARS]) for k, v in sorted(run.params.items())]
        for start in range(0, len(items), PARAM_BATCH):
            chunk = items[start : start + PARAM_BATCH]
            self._call("param logging",
                       lambda c=chunk: self.client.log_batch(self.run_id, params=c))

    def _resume(self, run_id: str) -> None:
        """Take over the run of an interrupted attempt (RUNNING, FAILED or KILLED)."""
        found = self._call("run lookup", lambda: self.client.get_run(run_id))
        self.run_id = found.info.run_id
        history = self._call("metric lookup",
                             lambda: self.client.get_metric_history(run_id, N_LABELED))
        self._logged_steps = {m.step for m in history}
        self._call("run restart", lambda: self.client.update_run(run_id, status="RUNNING"))

    def state_dict(self) -> dict:
        return {"run_id": self.run_id}

    def on_round_end(self, result: RoundResult) -> None:
        step = result.n_labeled
        if step in self._logged_steps:  # logged before a crash, recomputed identically
            return
        now = int(time.time() * 1000)
        values = dict(result.metrics)
        values.update(result.signals)
        values.update({ROUND: result.round, N_LABELED: result.n_labeled,
                       TRAIN_S: result.train_s, QUERY_S: result.query_s})
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        self._call("metric logging", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def on_checkpoint(self, state: LoopState) -> None:
        self._sync()

    def on_run_end(self, result: ALResult) -> None:
        now, last = int(time.time() * 1000), result.rounds[-1].n_labeled
        metrics = [Metric(FINAL_AULC, result.aulc, now, last),
                   Metric(FINAL_N_ANNOTATED, float(result.n_annotated), now, last)]
        metrics += [Metric(aulc_key(k), result.aulc_of(k), now, last) for k in TEST_KEYS
                    if all(k in r.metrics for r in result.rounds)]
        tags = [] if result.stopped_by is None else [RunTag(STOPPED_BY_TAG, result.stopped_by)]
        self._call("metric logging", lambda: self.client.log_batch(self.run_id, metrics=metrics,
                                                                   tags=tags))

    def on_exception(self, exc: BaseException) -> None:
        if self.run_id is not None:
            tag = RunTag(ERROR_TAG, error_message(exc)[:TAG_MAX_CHARS])
            self.client.log_batch(self.run_id, tags=[tag])

    def on_close(self, status: str) -> None:
        if self.run_id is None:
            return
        try:
            self._sync()
        finally:
            self._call("run end", lambda: self.client.set_terminated(self.run_id, status))


def call_with_retries(what: str, fn: Callable[[], T], uri: str, retries: int) -> T:
    """``fn()``, retried with exponential back-off on transient store errors; TrackingError else."""
    delay = 0.2
    for attempt in range(retries + 1):
        try:
            return fn()
        except (MlflowException, OSError) as exc:
            text = str(exc).lower()
            if attempt == retries or not any(t in text for t in _TRANSIENT):
                raise TrackingError(
                    f"MLflow {what} failed at {uri}: {str(exc).splitlines()[0][:300]}; "
                    "check tracking.uri (or MLFLOW_TRACKING_URI) or set tracking.enabled=false"
                ) from exc
            log.warning("MLflow %s: %s; retrying in %.1fs", what, text[:120], delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise TrackingError(f"MLflow {what} at {uri}: tracking.retries must be >= 0")


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) if missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another process created it meanwhile
        if found is None:
            raise
        return found.experiment_id


def start_parent_run(uri: str, experiment: str, artifact_location: str | None, name: str,
                     tags: Mapping[str, str]) -> str:
    """Create a sweep's parent run and return its id."""
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        exp_id = experiment_id(client, experiment, artifact_location)
        return client.create_run(exp_id, run_name=name, tags=dict(tags)).info.run_id
    except MlflowException as exc:
        raise TrackingError(f"cannot create the sweep's MLflow run at {uri}: {exc}") from exc


def restart_run(uri: str, run_id: str) -> None:
    """Mark ``run_id`` RUNNING again (a sweep re-run into its old directory)."""
    check_reachable(uri)
    MlflowClient(tracking_uri=uri).update_run(run_id, status="RUNNING")


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark ``run_id`` terminated with ``status``."""
    MlflowClient(tracking_uri=uri).set_terminated(run_id, status)
