"""MLflow tracking: run lifecycle, per-round batched metrics, artifacts. The only MLflow importer.

Follows the MLflow contract of DESIGN.md: step = number of labelled images,
one ``log_batch`` call per round, artifacts uploaded as they are written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from al_sim.artifacts import RunDirWriter
from al_sim.config import BudgetConf
from al_sim.data.base import ALDataset
from al_sim.errors import TrackingError
from al_sim.loop import ALResult, Callback, QueryRecord, RoundResult

log = logging.getLogger(__name__)
T = TypeVar("T")

PARAM_BATCH = 100
PARAM_MAX_CHARS = 6000
_TRANSIENT = ("database is locked", "connection", "timed out", "temporarily", "503", "502")


def default_uri(launch_dir: Path) -> str:
    """``sqlite:///<launch_dir>/mlflow.db`` (absolute, so every job of a sweep shares it)."""
    return f"sqlite:///{Path(launch_dir).resolve() / 'mlflow.db'}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists stay as their string form."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:PARAM_MAX_CHARS]
    return out


class MLflowTracker(Callback):
    """Creates the MLflow run and logs every round as it ends."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        writer: RunDirWriter,
        artifact_location: str | None = None,
        parent_run_id: str | None = None,
        retries: int = 5,
    ) -> None:
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.tags = dict(tags)
        if parent_run_id:
            self.tags["mlflow.parentRunId"] = parent_run_id
        self.params = dict(params)
        self.writer = writer
        self.artifact_location = artifact_location
        self.retries = retries
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id: str | None = None

    # ------------------------------------------------------------------ plumbing
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried with back-off on transient store errors."""
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (MlflowException, OSError) as exc:
                text = str(exc).lower()
                if attempt == self.retries or not any(t in text for t in _TRANSIENT):
                    raise TrackingError(
                        f"MLflow {what} failed at {self.uri}: {str(exc).splitlines()[0]}; "
                        "check tracking.uri (or MLFLOW_TRACKING_URI) or set tracking.enabled=false"
                    ) from exc
                log.warning("MLflow %s: %s; retrying in %.1fs", what, text[:120], delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def _upload(self, files: Iterable[Path]) -> None:
        assert self.run_id is not None
        for path in dict.fromkeys(files):  # de-duplicate, keep order
            sub = path.parent.relative_to(self.writer.run_dir).as_posix()
            dest = None if sub == "." else sub
            self._call("artifact upload",
                       lambda p=path, d=dest: self.client.log_artifact(self.run_id, str(p), d))

    # ------------------------------------------------------------------ lifecycle
    def start(self, config_yaml: Path) -> str:
        """Create the run, log params, tags and the resolved config; return the run id."""
        exp_id = self._call("experiment lookup", lambda: _experiment_id(
            self.client, self.experiment, self.artifact_location))
        run = self._call("run creation", lambda: self.client.create_run(
            exp_id, run_name=self.run_name, tags=self.tags))
        self.run_id = run.info.run_id
        items = [Param(k, v) for k, v in sorted(self.params.items())]
        for start in range(0, len(items), PARAM_BATCH):
            chunk = items[start : start + PARAM_BATCH]
            self._call("param logging", lambda c=chunk: self.client.log_batch(self.run_id,
                                                                              params=c))
        self._upload([config_yaml])
        return self.run_id

    def on_run_start(self, dataset: ALDataset, budget: BudgetConf) -> None:
        if self.run_id is None:
            raise RuntimeError("MLflowTracker.start() must run before the loop")

    def on_query(self, record: QueryRecord, dataset: ALDataset) -> None:
        self._upload(self.writer.take_new_files())

    def on_round_end(self, result: RoundResult) -> None:
        step, now = result.n_labeled, int(time.time() * 1000)
        values = dict(result.metrics)
        values.update({"round": result.round, "n_labeled": result.n_labeled,
                       "time/train_s": result.train_s, "time/query_s": result.query_s})
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        self._call("metric logging", lambda: self.client.log_batch(self.run_id, metrics=metrics))
        self._upload(self.writer.take_new_files())

    def on_run_end(self, result: ALResult) -> None:
        now = int(time.time() * 1000)
        last = result.rounds[-1].n_labeled
        metrics = [Metric("final/aulc", result.aulc, now, last),
                   Metric("final/n_annotated", float(result.n_annotated), now, last)]
        self._call("metric logging", lambda: self.client.log_batch(self.run_id, metrics=metrics))
        self._upload(self.writer.take_new_files())
        self._call("run end", lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def end_unfinished(self, status: str, message: str) -> None:
        """Upload what the run produced so far and mark it ``status`` (FAILED or KILLED)."""
        if self.run_id is None:
            return
        try:
            self._upload(self.writer.take_new_files() + self.writer.finish())
            tags = [RunTag("error", message[:5000])] if message else []
            self.client.log_batch(self.run_id, tags=tags)
        finally:
            self.client.set_terminated(self.run_id, status)


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
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
    client = MlflowClient(tracking_uri=uri)
    try:
        exp_id = _experiment_id(client, experiment, artifact_location)
        return client.create_run(exp_id, run_name=name, tags=dict(tags)).info.run_id
    except MlflowException as exc:
        raise TrackingError(f"cannot create the sweep's MLflow run at {uri}: {exc}") from exc


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark ``run_id`` terminated with ``status``."""
    MlflowClient(tracking_uri=uri).set_terminated(run_id, status)
