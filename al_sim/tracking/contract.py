"""The MLflow contract in one place: metric, tag and artifact names, the store's default URI.

Every writer (run dir, progress table, MLflow) and reader (comparison report)
takes these names from here. Torch-free and MLflow-free, so the report can
import it cheaply.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

# Per-round test metrics, in table order; logged as ``test/<name>`` with step = labelled images.
TEST_METRICS = ("accuracy", "f1_macro", "balanced_accuracy", "auroc", "loss")
TEST_KEYS = tuple(f"test/{name}" for name in TEST_METRICS)
ACCURACY, BALANCED_ACCURACY = "test/accuracy", "test/balanced_accuracy"
ROUND, N_LABELED = "round", "n_labeled"
TRAIN_S, QUERY_S, EVAL_S = "time/train_s", "time/query_s", "time/eval_s"
FINAL_AULC, FINAL_N_ANNOTATED = "final/aulc", "final/n_annotated"  # final/aulc: of accuracy
FINAL_AULC_PREFIX = "final/aulc_"  # final/aulc_<metric>: AULC of each test metric
STOP_PREFIX = "stop/"  # stop/<signal>: stopping signals after every round (maths.stop_signals)
# Annotation (oracle=panel; oracle=human with named annotators): expert time, cumulative, in
# seconds (also cost/expert_seconds/<name> per annotator), and the agreement of each round's
# answers (agreement/<statistic>, and how many images were flagged for adjudication).
EXPERT_SECONDS = "cost/expert_seconds"
AGREEMENT_PREFIX = "agreement/"
FLAGGED = "agreement/flagged"
FINAL_EXPERT_SECONDS = "final/expert_seconds"  # at the end: the run's total expert time
PRIMARY_METRIC = BALANCED_ACCURACY  # the comparison report's default (rare classes count)
# Multi-label runs (tag al_sim.task=multilabel) also log test/average_precision and
# test/auroc/<finding>; their primary metric is the macro AUROC over findings.
MULTILABEL_PRIMARY_METRIC = "test/auroc"
AUTO_METRIC = "auto"  # compare.metric=auto: the runs' task's primary metric
TASK_TAG = "al_sim.task"  # binary | multiclass | multilabel (maths.task)

CLIENT_TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"  # MLflow's client sends it as a bearer token


def primary_metric(task: str | None) -> str:
    """The comparison's default metric for runs of ``task`` (a TASK_TAG value)."""
    return MULTILABEL_PRIMARY_METRIC if task == "multilabel" else PRIMARY_METRIC


def aulc_key(metric: str) -> str:
    """``test/balanced_accuracy`` -> ``final/aulc_balanced_accuracy``."""
    return FINAL_AULC_PREFIX + metric.removeprefix("test/").replace("/", "_")


# Tags of every run, of a sweep's parent run, and the strategy tag of a full-data baseline.
RUN_TAGS = ("strategy", "dataset", "model", "seed", "budget")
SWEEP_ID_TAG, ERROR_TAG, ROLE_TAG = "sweep_id", "error", "al_sim.role"
# Set while a run (status RUNNING) waits for an expert's labels (oracle=human): the round and
# the batch folder; removed when the run continues.
WAITING_TAG = "al_sim.waiting_for_labels"
SWEEP_ROLE = "sweep"
JOB_TAG = "al_sim.job"  # a sweep job's overrides: finds an earlier attempt of the job
LOST_JOBS_TAG = "al_sim.lost_jobs"  # a sweep's parent: its jobs lost (cancelled, node died, ...)
# Where a run's latest attempt ran: host, SLURM job id and array <job>_<task>, Ray node, log file.
HOST_TAG, LOG_TAG, RAY_NODE_TAG = "al_sim.host", "al_sim.log", "al_sim.ray_node_id"
SLURM_JOB_TAG, SLURM_ARRAY_TAG = "al_sim.slurm_job_id", "al_sim.slurm_array"
FULL_STRATEGY = "full"
STOPPED_BY_TAG = "stopped_by"  # a run that budget.stop_when ended early: the rule and why
# Summary runs (one per strategy, children of a sweep's parent): mean and mean +- std curves.
SUMMARY_ROLE = "summary"
SWEEP_STRATEGY = "(sweep)"  # the parent's strategy tag, so grouping by strategy has no stray group
SUMMARY_PREFIX = "summary/"  # summary/<metric>/{mean,lower,upper,n_seeds}; lower/upper: mean -+ std
SUMMARY_STATS = ("mean", "lower", "upper", "n_seeds")
BASELINE_SUFFIX = "full_data"  # summary/<metric>/full_data: the full-data baseline, every step

# Artifacts, relative to the run directory (which holds the same files).
CONFIG_FILE = "config.yaml"
QUERIES_FILE = "queries.csv"
METRICS_FILE = "metrics.csv"
LABELED_SET_FILE = "labeled_set.csv"
CURVE_FILE = "learning_curve.png"
ANNOTATIONS_FILE = "annotations.csv"  # oracle=panel: every annotator's answer per queried image
GRIDS_DIR = "queries"
CHECKPOINT_FILE = "checkpoint.pt"  # in the run directory only: the state a resume continues
ARTIFACTS = (CONFIG_FILE, QUERIES_FILE, METRICS_FILE, LABELED_SET_FILE, CURVE_FILE,
             ANNOTATIONS_FILE)  # a file a run did not write is not uploaded

# Flattened config keys that do not change a run's results: a resume may change them and the
# comparison report does not split settings on them. A key ending in "." is a prefix. The
# memory knobs an out-of-memory line advises (the cap; a pool read whole or mapped, and where
# its extracted copy lives: the same images, tests/test_large_pool.py) are among them, so a run
# that ran out of memory resumes with the advice taken.
RESULTS_NEUTRAL_KEYS = ("progress", "resume", "tracking.", "callbacks.", "trainer.num_threads",
                        "trainer.device", "oracle.image_size",
                        "trainer.mapped_pool_mmap_threshold_mb", "trainer.memory_limit_fraction",
                        "dataset.in_memory_max_mb", "dataset.cache_dir")


# Metrics where lower is better (losses, durations); every other metric ranks higher-is-better.
LOWER_IS_BETTER_SUFFIXES = ("loss", "_s")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller ``metric`` is the better one (``test/loss``, ``time/train_s``)."""
    return metric.endswith(LOWER_IS_BETTER_SUFFIXES)


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric's values can take: [0, 1] for test scores (accuracy, F1, AUROC,
    average precision, per finding too); unbounded otherwise (losses, times, signals)."""
    if metric.startswith("test/") and not lower_is_better(metric):
        return 0.0, 1.0
    return -math.inf, math.inf


def results_neutral(key: str) -> bool:
    """Whether the flattened config key ``key`` leaves a run's results unchanged."""
    return any(key == n or (n.endswith(".") and key.startswith(n)) for n in RESULTS_NEUTRAL_KEYS)


# The MLflow UI (3.x opens in its GenAI view; this query opens the runs of model training).
UI_HOST, UI_PORT = "127.0.0.1", 5000  # mlflow ui's own defaults
UI_ADDRESS = f"http://{UI_HOST}:{UI_PORT}"
UI_RUNS_VIEW = "?workflowType=machine_learning"
UI_PORTS_TRIED = 100  # tracking.ui_port=null: the first free port of 5000..5099


def free_port(host: str = UI_HOST, first: int = UI_PORT, tries: int = UI_PORTS_TRIED) -> int:
    """The first port from ``first`` that nothing listens on at ``host`` now (``first`` when
    none of ``tries`` is free: mlflow ui then says the port is taken)."""
    for port in range(first, first + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    return first


def compare_link(experiment_id: str, run_ids: list[str], address: str = UI_ADDRESS) -> str:
    """The MLflow UI page that compares ``run_ids`` side by side (params, metric charts):
    MLflow 3.x's ``#/compare-runs?runs=[...]&experiments=[...]`` route, JSON lists quoted."""
    runs, experiments = (quote(json.dumps(ids, separators=(",", ":")), safe="")
                         for ids in (sorted(run_ids), [experiment_id]))
    return f"{address.rstrip('/')}/#/compare-runs?runs={runs}&experiments={experiments}"


def ui_link(experiment_id: str, run_id: str | None = None, address: str = UI_ADDRESS) -> str:
    """The MLflow UI page of an experiment's runs (or of one run), in the training view."""
    page = f"{address.rstrip('/')}/#/experiments/{experiment_id}"
    return page + (f"/runs/{run_id}" if run_id else "/runs") + UI_RUNS_VIEW


_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/:@\s]*:)[^@/\s]*@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it shown as
    ``***``: safe to print, to log and to store as an MLflow param or artifact."""
    return _CREDENTIALS.sub(r"\g<head>***@", text)


def where_to_look(uri: str, experiment_id: str, run_id: str | None = None,
                  ui_port: int | None = None, compared: list[str] | None = None) -> str:
    """Lines telling where a run's (or a sweep's) results went in MLflow, and how to open them
    (with ``compared``: also the link comparing those runs, one click from the terminal).

    A tracking server already is the UI: its own page; a database needs ``mlflow ui`` on it,
    on ``ui_port`` (None: a port free now, from 5000), one worker (several die at start-up on
    a loaded machine).
    """
    what = f"MLflow run {run_id}" if run_id else "MLflow experiment"
    uri = redact(uri)
    compare = ""
    if uri.split(":", 1)[0] in ("http", "https"):
        if compared:
            compare = f"\n  compare: open {compare_link(experiment_id, compared, uri)}"
        first = ""
        if os.environ.get(CLIENT_TOKEN_ENV):  # al_sim.server's: a browser needs it once
            first = (f"\n  (a browser's first visit: {uri.rstrip('/')}/?token="
                     f"${CLIENT_TOKEN_ENV})")
        return (f"{what} in {uri}\n  view: open {ui_link(experiment_id, run_id, uri)}{compare}"
                f"{first}")
    port = free_port() if ui_port is None else ui_port
    address = f"http://{UI_HOST}:{port}"
    if compared:
        compare = f"\n  compare: open {compare_link(experiment_id, compared, address)}"
    return (f"{what} in {uri}\n  view: mlflow ui --backend-store-uri {uri} --port {port} "
            f"--workers 1, then open {ui_link(experiment_id, run_id, address)}{compare}")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` tracking URI (query part dropped), else None."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url  # MLflow's own URL parser; loaded only for sqlite
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(uri).database
    except ArgumentError:
        return None
    return Path(database).resolve() if database and database != ":memory:" else None


def default_tracking_uri(launch_dir: Path) -> str:
    """``sqlite:///<launch_dir>/mlflow.db`` (absolute, so every job of a sweep shares it)."""
    return f"sqlite:///{Path(launch_dir).resolve() / 'mlflow.db'}"


def tracking_uri(configured: str | None, launch_dir: Path) -> str:
    """The store a run, a sweep or a report uses: ``tracking.uri`` or the default."""
    return configured or default_tracking_uri(launch_dir)


def local_folder(location: str) -> Path | None:
    """The folder an artifact location names on this machine (a path or a file: URI), or
    None for a remote one (s3://, mlflow-artifacts:, ...)."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # C:\...
        return Path(location)
    return None


def default_artifact_location(configured: str | None, launch_dir: Path,
                              uri: str | None = None) -> str | None:
    """Where a new experiment keeps artifacts: ``tracking.artifact_location``, else the
    server's own store for an http(s) tracking server (``--serve-artifacts``: workers need
    no shared disk), else ``<launch dir>/mlartifacts``."""
    if configured:
        folder = local_folder(configured)
        if folder is not None and not folder.expanduser().is_absolute():
            return str(Path(launch_dir).resolve() / folder)  # not the process's own cwd
        return str(Path(configured).expanduser()) if configured.startswith("~") else configured
    if uri is not None and uri.split(":", 1)[0] in ("http", "https"):
        return None
    return (Path(launch_dir).resolve() / "mlartifacts").as_uri()
