"""The MLflow writer: run lifecycle, per-round batched metrics, the run dir mirrored as artifacts.

Follows the MLflow contract (``al_sim.tracking.contract``): step = number of labelled
images, one ``log_batch`` call per round, and the run directory's result files
uploaded as they change. Store calls, retries and sweep parent runs:
:mod:`al_sim.tracking.store`.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient

from al_sim.config.schema import TrackingConf
from al_sim.core.events import (
    FINISHED,
    PAUSED,
    ALResult,
    LoopState,
    RoundResult,
    RunCallback,
    RunInfo,
)
from al_sim.data.base import ALDataset
from al_sim.runtime.errors import AlreadyFinishedError, TrackingError, error_message, storable
from al_sim.runtime.files import atomic_write
from al_sim.tracking.contract import (
    ARTIFACTS,
    ERROR_TAG,
    EXPERT_SECONDS,
    FINAL_AULC,
    FINAL_EXPERT_SECONDS,
    FINAL_N_ANNOTATED,
    GRIDS_DIR,
    JOB_TAG,
    N_LABELED,
    QUERY_S,
    ROLE_TAG,
    ROUND,
    STOPPED_BY_TAG,
    SWEEP_ID_TAG,
    SWEEP_ROLE,
    TASK_TAG,
    TEST_KEYS,
    TRAIN_S,
    WAITING_TAG,
    aulc_key,
    default_artifact_location,
    redact,
    tracking_uri,
    where_to_look,
)
from al_sim.tracking.experiments import experiment_id
from al_sim.tracking.placement import placement_tags
from al_sim.tracking.reachability import check_reachable
from al_sim.tracking.retry import RetryPolicy
from al_sim.tracking.store import call_with_retries, open_store

log = logging.getLogger(__name__)
T = TypeVar("T")

PARAM_BATCH = 100
PARAM_MAX_CHARS = 6000
TAG_MAX_CHARS = 5000
PARENT_TAG = "mlflow.parentRunId"
RUN_ID_FILE = ".mlflow_run_id"  # in the run dir: the MLflow run of the latest attempt


class MLflowWriter(RunCallback):
    """Creates (or takes over) the MLflow run and logs every round as it ends."""

    key = "mlflow"

    def __init__(self, tracking: Mapping[str, Any] | TrackingConf | None = None) -> None:
        conf = tracking if isinstance(tracking, TrackingConf) else TrackingConf(**(tracking or {}))
        self.uri, self.experiment = conf.uri or "", conf.experiment
        self.artifact_location = conf.artifact_location
        self.connect_wait_s, self.http_timeout = conf.connect_wait_s, conf.http_timeout
        self.ui_port = conf.ui_port
        self.policy = RetryPolicy(retries=conf.retries, timeout_s=conf.retry_timeout_s,
                                  backoff_max_s=conf.backoff_max_s)
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.experiment_id = ""
        self.artifact_uri: str | None = None  # where the run's artifacts go, once it exists
        self._in_sweep = False
        self.run_dir = Path(".")
        self._logged_steps: set[int] = set()  # rounds an interrupted attempt already logged
        self._uploaded: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime) when uploaded
        self._waiting = ""  # the pending query a PAUSED close leaves the run waiting for
        self._error = ""  # a failing run's error tag, extended by sinks that cannot close

    # ------------------------------------------------------------------ plumbing
    @property
    def _store(self) -> MlflowClient:
        """The store's client once ``setup`` opened it."""
        if self.client is None:
            raise RuntimeError("MLflowWriter used before setup()")
        return self.client

    @property
    def _run(self) -> str:
        """The MLflow run once ``setup`` created or took it over."""
        if self.run_id is None:
            raise RuntimeError("MLflowWriter used before its run exists")
        return self.run_id

    def _call(self, what: str, fn: Callable[[], T], artifacts: str | None = None) -> T:
        """``fn()``, retried with back-off on transient store errors (``artifacts``: it writes
        to the run's artifact location)."""
        return call_with_retries(what, fn, self.uri, self.policy, artifacts)

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
            self._call("artifact upload", functools.partial(
                self._store.log_artifact, self._run, str(path), dest), self.artifact_uri)
            self._uploaded[path] = seen

    # ------------------------------------------------------------------ lifecycle
    def setup(self, run: RunInfo) -> None:
        self.uri = tracking_uri(self.uri or None, run.launch_dir)
        self.run_dir = Path(run.run_dir)
        self._in_sweep = run.parent is not None
        check_reachable(self.uri, self.http_timeout, wait_s=self.connect_wait_s)
        self.client = open_store(self.uri)
        earlier = None if run.resume is None else run.resume.callbacks.get(self.key, {})
        if earlier and earlier.get("run_id"):
            self._resume(str(earlier["run_id"]))
        else:
            self._close_orphan()
            self._start(run)
            atomic_write(self.run_dir / RUN_ID_FILE, f"{self.run_id}\n")
            if run.resume is not None:  # resumed with tracking switched on: log what came before
                for done in run.resume.result.rounds:
                    self.on_round_end(done)
        where = [RunTag(k, v[:TAG_MAX_CHARS]) for k, v in placement_tags().items()]
        self._call("placement tags", lambda: self._store.log_batch(self._run, tags=where))
        self._sync()

    def _close_orphan(self) -> None:
        """An earlier attempt in this run dir that left no checkpoint (stopped in round 0).

        Its MLflow run would stay beside this one: deleted when it logged nothing
        (RUNNING after a SIGKILL, KILLED after a clean interrupt), else marked KILLED.
        """
        path = self.run_dir / RUN_ID_FILE
        if not path.exists():
            return
        run_id = path.read_bytes().decode("ascii", "replace").strip()
        if not re.fullmatch(r"[0-9a-f]{32}", run_id):
            return  # not an MLflow run id (a damaged file): no orphan to find
        try:
            found = self._call("orphan run lookup", lambda: self._store.get_run(run_id))
        except TrackingError:
            return  # another store, or deleted already
        if found.info.status not in ("RUNNING", "KILLED"):
            return  # finished, or failed: its record stays
        if not found.data.metrics:
            self._call("orphan run deletion", lambda: self._store.delete_run(run_id))
        elif found.info.status == "RUNNING":
            self._call("orphan run end", lambda: self._store.set_terminated(run_id, "KILLED"))

    def _start(self, run: RunInfo) -> None:
        location = default_artifact_location(self.artifact_location, run.launch_dir,
                                             self.uri)
        exp_id = self._call("experiment lookup", lambda: experiment_id(
            self._store, self.experiment, location, bool(self.artifact_location)))
        tags = dict(run.tags)
        parent = run.parent or self._parent_on_server(exp_id, tags.get(SWEEP_ID_TAG))
        if parent:
            tags[PARENT_TAG] = parent
            earlier = self._earlier_attempt(exp_id, parent, tags.get(JOB_TAG))
            if earlier is not None:  # killed before its first checkpoint, or on another node
                if earlier.info.status == "FINISHED":
                    raise AlreadyFinishedError(
                        f"sweep job [{tags[JOB_TAG]}] already finished (MLflow run "
                        f"{earlier.info.run_id}); to run it again use a new hydra.sweep.dir")
                self._resume(earlier.info.run_id)  # recomputed identically; logged steps skipped
                return
        created = self._call("run creation", lambda: self._store.create_run(
            exp_id, run_name=run.name, tags=tags))
        self.run_id, self.experiment_id = created.info.run_id, exp_id
        self.artifact_uri = created.info.artifact_uri
        items = [Param(k, storable(redact(v))[:PARAM_MAX_CHARS])
                 for k, v in sorted(run.params.items())]
        for start in range(0, len(items), PARAM_BATCH):
            chunk = items[start : start + PARAM_BATCH]
            self._call("param logging",
                       functools.partial(self._store.log_batch, self._run, params=chunk))

    def _parent_on_server(self, exp_id: str, sweep_id: str | None) -> str | None:
        """The sweep's parent run, looked up by tag: for workers that do not see the sweep dir."""
        if not sweep_id:
            return None
        query = (f"tags.{SWEEP_ID_TAG} = '{sweep_id.replace(chr(39), '')}' "
                 f"and tags.`{ROLE_TAG}` = '{SWEEP_ROLE}'")
        found = self._call("parent lookup", lambda: self._store.search_runs(
            [exp_id], query, max_results=1, order_by=["attributes.start_time DESC"]))
        return found[0].info.run_id if found else None

    def _earlier_attempt(self, exp_id: str, parent: str, job: str | None) -> Run | None:
        """This sweep job's run from an attempt that left no checkpoint here, if any."""
        if not job or "'" in job:
            return None
        query = f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{JOB_TAG}` = '{job}'"
        found = self._call("job lookup", lambda: self._store.search_runs(
            [exp_id], query, order_by=["attributes.start_time ASC"]))
        return found[0] if found else None

    def _resume(self, run_id: str) -> None:
        """Take over the run of an interrupted attempt (RUNNING, FAILED or KILLED)."""
        found = self._call("run lookup", lambda: self._store.get_run(run_id))
        self.run_id, self.experiment_id = found.info.run_id, found.info.experiment_id
        self.artifact_uri = found.info.artifact_uri
        history = self._call("metric lookup",
                             lambda: self._store.get_metric_history(run_id, N_LABELED))
        self._logged_steps = {m.step for m in history}
        self._call("run restart", lambda: self._store.update_run(run_id, status="RUNNING"))
        if WAITING_TAG in found.data.tags:  # the labels are (about to be) in: it runs again
            self._call("tag removal", lambda: self._store.delete_tag(run_id, WAITING_TAG))

    def state_dict(self) -> dict:
        return {"run_id": self.run_id}

    def on_run_start(self, dataset: ALDataset, rounds: int) -> None:
        if self.run_id is not None:  # the report picks the task's primary metric from it
            tag = RunTag(TASK_TAG, str(dataset.task.kind))
            self._call("tag logging", lambda: self._store.log_batch(self._run, tags=[tag]))

    def on_round_end(self, result: RoundResult) -> None:
        step = result.n_labeled
        if step in self._logged_steps:  # logged before a crash, recomputed identically
            return
        now = int(time.time() * 1000)
        values = dict(result.metrics)
        values.update(result.signals)
        values.update({k: v for k, v in {**result.costs, **result.agreement}.items()
                       if math.isfinite(v)})  # an undefined kappa (NaN) is not logged
        values.update({ROUND: result.round, N_LABELED: result.n_labeled,
                       TRAIN_S: result.train_s, QUERY_S: result.query_s})
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        self._call("metric logging", lambda: self._store.log_batch(self._run, metrics=metrics))

    def on_checkpoint(self, state: LoopState) -> None:
        if state.pending is not None:
            self._waiting = f"round {state.pending.round}: {len(state.pending.indices)} images"
        self._sync()

    def on_run_end(self, result: ALResult) -> None:
        now, last = int(time.time() * 1000), result.rounds[-1].n_labeled
        metrics = [Metric(FINAL_AULC, result.aulc, now, last),
                   Metric(FINAL_N_ANNOTATED, float(result.n_annotated), now, last)]
        keys = dict.fromkeys([*TEST_KEYS, *result.rounds[-1].metrics])  # and per-finding ones
        metrics += [Metric(aulc_key(k), result.aulc_of(k), now, last) for k in keys
                    if all(k in r.metrics for r in result.rounds)]
        spent = result.rounds[-1].costs.get(EXPERT_SECONDS)
        if spent is not None:  # an oracle with a cost model: the run's total expert time
            metrics.append(Metric(FINAL_EXPERT_SECONDS, float(spent), now, last))
        tags = [] if result.stopped_by is None else [RunTag(STOPPED_BY_TAG, result.stopped_by)]
        self._call("metric logging", lambda: self._store.log_batch(self._run, metrics=metrics,
                                                                   tags=tags))

    def on_exception(self, exc: BaseException) -> None:
        self._error = error_message(exc)
        if self.run_id is not None:
            tag = RunTag(ERROR_TAG, self._error[:TAG_MAX_CHARS])
            self._call("error tag", lambda: self._store.log_batch(self._run, tags=[tag]))

    def on_close_failures(self, failures: list[str]) -> None:
        if self.run_id is not None:
            text = "; ".join([self._error, *failures]) if self._error else "; ".join(failures)
            tag = RunTag(ERROR_TAG, text[:TAG_MAX_CHARS])
            self._call("error tag", lambda: self._store.log_batch(self._run, tags=[tag]))

    def on_close(self, status: str) -> None:
        if self.run_id is None:
            return
        try:
            self._sync()
        finally:
            if status == PAUSED:  # stays RUNNING; the same command continues it
                tag = RunTag(WAITING_TAG, self._waiting or "yes")
                self._call("tag logging", lambda: self._store.log_batch(self._run, tags=[tag]))
            else:
                self._call("run end", lambda: self._store.set_terminated(self._run, status))
        if status == FINISHED and not self._in_sweep:  # a sweep says it once, at its end
            print(where_to_look(self.uri, self.experiment_id, self.run_id, self.ui_port),
                  file=sys.stderr, flush=True)
