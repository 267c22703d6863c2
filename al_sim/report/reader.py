"""Reads runs back from MLflow for the comparison report: plain data out, no MLflow types leak.

Selection problems are ConfigError (one clear line). Imports no torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from al_sim.config.schema import DEFAULT_EXPERIMENT
from al_sim.runtime.errors import ConfigError, TrackingError
from al_sim.runtime.interrupts import deferred
from al_sim.tracking.contract import (
    FULL_STRATEGY,
    ROLE_TAG,
    SUMMARY_ROLE,
    SWEEP_ID_TAG,
    SWEEP_ROLE,
    redact,
    sqlite_file,
)
from al_sim.tracking.reachability import check_reachable
from al_sim.tracking.store import open_store
from al_sim.tracking.store_fixes import artifact_fix

LATEST, ALL = "latest", "all"
PARENT_TAG = "mlflow.parentRunId"
METRIC_BATCH = 1000  # MLflow's log_batch limit


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
class SummaryRun:
    """A run the report writes: name, tags, params and (key, step, value) metric points."""

    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[tuple[str, int, float]]


@dataclass
class SweepRef:
    """The runs a report covers: one sweep (its parent run) or a whole experiment."""

    experiment: str
    experiment_id: str
    sweep_id: str | None  # None: every run of the experiment
    parent_run_id: str | None


def _same_sweep(tag: str, wanted: str) -> bool:
    """Whether the sweep dir ``wanted`` (relative, absolute or ``~/...``) is the one tagged."""
    return Path(tag) == Path(wanted) or Path(tag).resolve() == Path(wanted).expanduser().resolve()


class RunReader:
    """Finds a sweep's finished runs and the full-data baselines; logs report artifacts."""

    def __init__(self, uri: str, http_timeout: float = 10.0) -> None:
        database = sqlite_file(uri)
        if database is not None and not database.exists():
            raise ConfigError(
                f"no MLflow store at {redact(uri)}: run a sweep from this directory first "
                "(python -m al_sim.run -m ...), or set tracking.uri=<uri of the sweep's store>"
            )
        check_reachable(uri, http_timeout)
        self.uri = uri
        self.client = open_store(uri)

    def _search(self, experiment_id: str, filter_string: str = "") -> list[Any]:
        return self._search_many([experiment_id], filter_string)

    def _search_many(self, experiment_ids: list[str], filter_string: str = "") -> list[Any]:
        runs: list[Any] = []
        token = None
        while experiment_ids:
            page = self.client.search_runs(experiment_ids, filter_string, max_results=1000,
                                           order_by=["attributes.start_time DESC"],
                                           page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs

    def select(self, experiment: str, sweep_id: str, anywhere: bool = False) -> SweepRef:
        """The sweep ``sweep_id`` (a sweep dir, a parent run id, ``latest`` or ``all``); with
        ``anywhere``, a sweep is looked for in every experiment (each study has its own)."""
        if anywhere and sweep_id != ALL:
            ref = self._select_anywhere(sweep_id)
            if ref is not None:
                return ref
        found = self.client.get_experiment_by_name(experiment)
        if found is None or found.lifecycle_stage != "active":
            names = sorted(e.name for e in self.client.search_experiments())
            raise ConfigError(f"experiment {experiment!r} not found in {redact(self.uri)} (known: "
                              f"{', '.join(names) or 'none'}); set tracking.experiment=<name>")
        exp_id = found.experiment_id
        if sweep_id == ALL:
            return SweepRef(experiment, exp_id, None, None)
        parents = self._search(exp_id, f"tags.`{ROLE_TAG}` = '{SWEEP_ROLE}'")
        if sweep_id == LATEST:
            if not parents:
                raise ConfigError(f"no sweep in experiment {experiment!r} at "
                                  f"{redact(self.uri)}: run one (python -m al_sim.run -m ...) "
                                  "or set sweep_id=all")
            parents = parents[:1]
        for run in parents:
            tag = run.data.tags.get(SWEEP_ID_TAG, "")
            if sweep_id in (LATEST, run.info.run_id) or _same_sweep(tag, sweep_id):
                return SweepRef(experiment, exp_id, tag, run.info.run_id)
        known = ", ".join(r.data.tags.get(SWEEP_ID_TAG, r.info.run_id) for r in parents[:5])
        raise ConfigError(f"unknown sweep_id {sweep_id!r} in experiment {experiment!r} "
                          f"(latest sweeps: {known or 'none'}); set sweep_id=<sweep dir>, "
                          "latest or all")

    def _select_anywhere(self, sweep_id: str) -> SweepRef | None:
        """The latest sweep (or the one named ``sweep_id``) of any active experiment; None
        where the store holds no sweep (or none at all for ``latest``)."""
        experiments = {e.experiment_id: e.name for e in self.client.search_experiments()}
        parents = self._search_many(list(experiments), f"tags.`{ROLE_TAG}` = '{SWEEP_ROLE}'")
        for run in parents[:1] if sweep_id == LATEST else parents:
            tag = run.data.tags.get(SWEEP_ID_TAG, "")
            if sweep_id in (LATEST, run.info.run_id) or _same_sweep(tag, sweep_id):
                exp_id = run.info.experiment_id
                return SweepRef(experiments[exp_id], exp_id, tag, run.info.run_id)
        if sweep_id == LATEST or not parents:
            return None  # the default experiment's own answer follows
        known = ", ".join(r.data.tags.get(SWEEP_ID_TAG, r.info.run_id) for r in parents[:5])
        raise ConfigError(f"unknown sweep_id {sweep_id!r} in {redact(self.uri)} (latest sweeps: "
                          f"{known}); set sweep_id=<sweep dir>, latest or all")

    def runs(self, ref: SweepRef, keys: Iterable[str]) -> tuple[list[StoredRun], dict[str, int]]:
        """The FINISHED runs of ``ref`` with histories of ``keys``, and a count per status."""
        if ref.parent_run_id is not None:
            found = self._search(ref.experiment_id,
                                 f"tags.`mlflow.parentRunId` = '{ref.parent_run_id}'")
        else:
            found = self._search(ref.experiment_id)
        found = [r for r in found if r.data.tags.get(ROLE_TAG) not in (SWEEP_ROLE, SUMMARY_ROLE)]
        statuses: dict[str, int] = {}
        for run in found:
            statuses[run.info.status] = statuses.get(run.info.status, 0) + 1
        finished = [r for r in found if r.info.status == "FINISHED"]
        return [self._load(r, keys) for r in finished], statuses

    def baselines(self, ref: SweepRef, keys: Iterable[str]) -> list[StoredRun]:
        """FINISHED full-data runs (tag ``strategy=full``) of the experiment; where it has none,
        those of the default one (a single ``budget=full`` run beside a study's sweep)."""
        where = f"tags.strategy = '{FULL_STRATEGY}'"
        found = self._search(ref.experiment_id, where)
        default = self.client.get_experiment_by_name(DEFAULT_EXPERIMENT)
        if not found and default is not None and default.experiment_id != ref.experiment_id:
            found = self._search(default.experiment_id, where)
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

    def replace_summary_runs(self, ref: SweepRef, runs: Iterable[SummaryRun],
                             parent_tags: dict[str, str]) -> list[str]:
        """Delete the summary runs an earlier report left under the sweep, log ``runs`` anew.

        Each becomes a FINISHED child of the sweep's parent run (tag ``al_sim.role=summary``);
        the parent gets ``parent_tags``. Returns the new run ids.
        """
        if ref.parent_run_id is None:
            return []
        try:
            old = self._search(ref.experiment_id, f"tags.`{PARENT_TAG}` = '{ref.parent_run_id}' "
                               f"and tags.`{ROLE_TAG}` = '{SUMMARY_ROLE}'")
            for run in old:
                self.client.delete_run(run.info.run_id)
            self.client.log_batch(ref.parent_run_id,
                                  tags=[RunTag(k, v) for k, v in parent_tags.items()])
            return [self._log_summary(ref, run) for run in runs]
        except MlflowException as exc:
            raise TrackingError(f"cannot log summary runs at {redact(self.uri)}: "
                                f"{str(exc).splitlines()[0]}") from exc

    def _log_summary(self, ref: SweepRef, run: SummaryRun) -> str:
        """One summary run, logged whole: an interrupt waits for it, and a store that fails
        midway leaves no RUNNING half of it (it is deleted)."""
        tags = {**run.tags, ROLE_TAG: SUMMARY_ROLE, PARENT_TAG: str(ref.parent_run_id)}
        with deferred():
            run_id = self.client.create_run(ref.experiment_id, run_name=run.name,
                                            tags=tags).info.run_id
            try:
                self.client.log_batch(run_id,
                                      params=[Param(k, v) for k, v in run.params.items()])
                metrics = [Metric(k, float(v), 0, int(step)) for k, step, v in run.metrics]
                for start in range(0, len(metrics), METRIC_BATCH):
                    self.client.log_batch(run_id, metrics=metrics[start:start + METRIC_BATCH])
                self.client.set_terminated(run_id, "FINISHED")
            except Exception:
                with contextlib.suppress(Exception):
                    self.client.delete_run(run_id)
                raise
        return run_id

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        """Upload every file of ``folder`` to ``run_id`` under ``artifact_path``."""
        try:
            self.client.log_artifacts(run_id, str(folder), artifact_path)
        except (MlflowException, OSError) as exc:
            try:
                where = self.client.get_run(run_id).info.artifact_uri
            except (MlflowException, OSError):
                where = self.uri
            raise TrackingError(
                f"cannot log the report to run {run_id} at {redact(where)}: "
                f"{str(exc).splitlines()[0]}; {artifact_fix(where, exc)}, or set "
                f"log_artifacts=false (the report's files are in {folder})") from exc
