"""MLflow tracking: run lifecycle, per-round batched metrics, artifacts. The only MLflow importer.

Follows the MLflow contract of DESIGN.md: step = number of labelled images,
one ``log_batch`` call per round, artifacts uploaded as they are written.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

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
        self.params = {k: v[:PARAM_MAX_CHARS] for k, v in params.items()}
        self.writer = writer
        self.artifact_location = artifact_location
        self.retries = retries
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id: str | None = None
        self._logged_steps: set[int] = set()  # rounds an interrupted attempt already logged

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
                        f"MLflow {what} failed at {self.uri}: {str(exc).splitlines()[0][:300]}; "
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
        check_reachable(self.uri)
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

    def resume(self, run_id: str, config_yaml: Path) -> str:
        """Take over the run ``run_id`` of an interrupted attempt (RUNNING, FAILED or KILLED)."""
        check_reachable(self.uri)
        run = self._call("run lookup", lambda: self.client.get_run(run_id))
        self.run_id = run.info.run_id
        history = self._call("metric lookup",
                             lambda: self.client.get_metric_history(run_id, "n_labeled"))
        self._logged_steps = {m.step for m in history}
        self._call("run restart", lambda: self.client.update_run(run_id, status="RUNNING"))
        self._upload([config_yaml])
        return run_id

    def on_run_start(self, dataset: ALDataset, budget: BudgetConf) -> None:
        if self.run_id is None:
            raise RuntimeError("MLflowTracker.start() must run before the loop")

    def on_query(self, record: QueryRecord, dataset: ALDataset) -> None:
        self._upload(self.writer.take_new_files())

    def on_round_end(self, result: RoundResult) -> None:
        step, now = result.n_labeled, int(time.time() * 1000)
        if step in self._logged_steps:  # logged before a crash, recomputed identically
            self._upload(self.writer.take_new_files())
            return
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
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        exp_id = _experiment_id(client, experiment, artifact_location)
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


# =============================================================================================
# Reading runs back for the comparison report (al_sim.compare). Owned by the compare feature:
# plain data out, no MLflow types leak; selection errors are ConfigError (one clear line).
# =============================================================================================
from dataclasses import dataclass, field  # noqa: E402

from al_sim.errors import ConfigError  # noqa: E402

SWEEP_ROLE = "sweep"
LATEST, ALL = "latest", "all"


@dataclass
class StoredRun:
    """A run as the report needs it: tags, params, latest metrics, per-step histories."""

    run_id: str
    name: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class SweepRef:
    """The runs a report covers: one sweep (its parent run) or a whole experiment."""

    experiment: str
    experiment_id: str
    sweep_id: str | None  # None: every run of the experiment
    parent_run_id: str | None


def _same_sweep(tag: str, wanted: str) -> bool:
    return Path(tag) == Path(wanted) or Path(tag).resolve() == Path(wanted).resolve()


class RunReader:
    """Finds a sweep's finished runs and the full-data baselines; logs report artifacts."""

    def __init__(self, uri: str) -> None:
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            raise ConfigError(
                f"no MLflow store at {uri}: run a sweep from this directory first "
                "(python -m al_sim.run -m ...), or set tracking.uri=<uri of the sweep's store>"
            )
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

    def _search(self, experiment_id: str, filter_string: str = "") -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs([experiment_id], filter_string, max_results=1000,
                                           order_by=["attributes.start_time DESC"],
                                           page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def select(self, experiment: str, sweep_id: str) -> SweepRef:
        """The sweep ``sweep_id`` (a sweep dir, a parent run id, ``latest`` or ``all``)."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None or found.lifecycle_stage != "active":
            names = sorted(e.name for e in self.client.search_experiments())
            raise ConfigError(f"experiment {experiment!r} not found in {self.uri} (known: "
                              f"{', '.join(names) or 'none'}); set tracking.experiment=<name>")
        exp_id = found.experiment_id
        if sweep_id == ALL:
            return SweepRef(experiment, exp_id, None, None)
        parents = self._search(exp_id, f"tags.`al_sim.role` = '{SWEEP_ROLE}'")
        if sweep_id == LATEST:
            if not parents:
                raise ConfigError(f"no sweep in experiment {experiment!r} at {self.uri}: run one "
                                  "(python -m al_sim.run -m ...) or set sweep_id=all")
            parents = parents[:1]
        for run in parents:
            tag = run.data.tags.get("sweep_id", "")
            if sweep_id in (LATEST, run.info.run_id) or _same_sweep(tag, sweep_id):
                return SweepRef(experiment, exp_id, tag, run.info.run_id)
        known = ", ".join(r.data.tags.get("sweep_id", r.info.run_id) for r in parents[:5])
        raise ConfigError(f"unknown sweep_id {sweep_id!r} in experiment {experiment!r} "
                          f"(latest sweeps: {known or 'none'}); set sweep_id=<sweep dir>, "
                          "latest or all")

    def runs(self, ref: SweepRef, keys: Iterable[str]) -> tuple[list[StoredRun], dict[str, int]]:
        """The FINISHED runs of ``ref`` with histories of ``keys``, and a count per status."""
        if ref.parent_run_id is not None:
            found = self._search(ref.experiment_id,
                                 f"tags.`mlflow.parentRunId` = '{ref.parent_run_id}'")
        else:
            found = [r for r in self._search(ref.experiment_id)
                     if r.data.tags.get("al_sim.role") != SWEEP_ROLE]
        statuses: dict[str, int] = {}
        for run in found:
            statuses[run.info.status] = statuses.get(run.info.status, 0) + 1
        finished = [r for r in found if r.info.status == "FINISHED"]
        return [self._load(r, keys) for r in finished], statuses

    def baselines(self, ref: SweepRef, keys: Iterable[str]) -> list[StoredRun]:
        """FINISHED full-data runs (tag ``strategy=full``) of the experiment."""
        found = self._search(ref.experiment_id, "tags.strategy = 'full'")
        return [self._load(r, keys) for r in found if r.info.status == "FINISHED"]

    def _load(self, run: Any, keys: Iterable[str]) -> StoredRun:
        history: dict[str, list[tuple[int, float]]] = {}
        for key in keys:
            if key not in run.data.metrics:
                continue
            points = sorted(self.client.get_metric_history(run.info.run_id, key),
                            key=lambda m: (m.step, m.timestamp))
            last = {m.step: m.value for m in points}  # a re-logged step keeps its last value
            history[key] = sorted(last.items())
        return StoredRun(run.info.run_id, run.info.run_name or run.info.run_id, run.info.status,
                         run.info.start_time or 0, dict(run.data.tags), dict(run.data.params),
                         dict(run.data.metrics), history)

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        """Upload every file of ``folder`` to ``run_id`` under ``artifact_path``."""
        try:
            self.client.log_artifacts(run_id, str(folder), artifact_path)
        except (MlflowException, OSError) as exc:
            raise TrackingError(f"cannot log the report to run {run_id} at {self.uri}: "
                                f"{str(exc).splitlines()[0]}") from exc
