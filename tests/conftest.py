"""Shared fixtures: small synthetic datasets, fast trainer settings, a real-CLI runner."""

from __future__ import annotations

import compileall
import contextlib
import faulthandler
import io
import logging
import os
import random
import runpy
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from al_sim.config.data import PreprocessConf
from al_sim.config.schema import TrainerConf
from al_sim.core.training import Trainer
from al_sim.data.synthetic import load_synthetic
from al_sim.data.transforms import Preprocess
from tests import fork_nested, fork_server

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"

# The test files that cost most, started first: xdist hands out whole files (--dist loadfile)
# in collection order (--no-loadscope-reorder), and one of these started last would run alone
# at the end while the other worker idles. The head pairs a multi-process file with one that
# forks from the fork server (test_concurrency beside test_cluster, each starting many
# interpreters, slowed both: 440-454 s against 423-442 s); after it, every other file of 5 CPU-s
# or more (each file alone, its processes counted; 2026-12-06), largest first.
LONGEST_FIRST = ("test_benchmarks.py", "test_cluster.py", "test_concurrency.py",
                 "test_stack_jobs.py", "test_launcher_watch.py", "test_stack.py",
                 "test_pool_larger_than_memory.py", "test_lost_jobs.py", "test_config.py",
                 "test_resume.py", "test_multilabel_cli.py", "test_hardening_tracking.py",
                 "test_bad_input.py", "test_compare.py", "test_stack_lockstep.py",
                 "test_volumes.py", "test_cli.py", "test_finished_jobs.py", "test_memory_cap.py",
                 "test_benchmarks_kernels.py", "test_structure.py", "test_label_panel_browser.py",
                 "test_large_pool.py", "test_sweep_paths.py", "test_hardening_config.py",
                 "test_hostile_files.py", "test_label_loop.py", "test_resnet.py",
                 "test_hardening_data.py")


# What a run writes into its working directory: a test must keep it in its tmp_path.
RUN_LITTER = ("outputs", "multirun", "mlruns", "mlartifacts", "mlflow.db")
_litter_before: set[str] = set()


def _litter() -> set[str]:
    """The run-output paths in the repository, ``.gitkeep`` files aside."""
    found = set()
    for name in RUN_LITTER:
        top = REPO / name
        if top.exists():
            found.add(name)
        if top.is_dir():
            found |= {str(p.relative_to(REPO)) for p in top.rglob("*") if p.name != ".gitkeep"}
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        _litter_before.update(_litter())
        # Where bytecode is not written (PYTHONDONTWRITEBYTECODE), each real interpreter and
        # each forked run would compile al_sim's modules again: 0.4 s of CPU a run, here once.
        for package in ("al_sim", "hydra_plugins", "tests", "benchmarks"):
            compileall.compile_dir(REPO / package, quiet=1)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the suite when a test left run output in the repository."""
    if hasattr(session.config, "workerinput"):
        return
    new = sorted(_litter() - _litter_before)
    if new:
        session.config.get_terminal_writer().line(
            f"\nerror: the tests left run output in the repository: {', '.join(new[:5])}"
            f"{' ...' if len(new) > 5 else ''}; a test must run in its tmp_path", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first; every other file after them in its usual order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# Small enough for seconds per run on 2 cores, big enough for every class to appear.
FAST_CLI = [
    "dataset.n_pool=400",
    "dataset.n_test=200",
    "trainer.epochs=2",
    "trainer.min_steps=4",
    "trainer.num_threads=1",
    "progress=false",
]
# A submitit launcher asks after its jobs every hydra.callbacks.sweep.status_poll_s (10 s, for a
# SLURM scheduler's sake): a local sweep would wait up to that long after its last job ends.
QUICK_POLL = "hydra.callbacks.sweep.status_poll_s=0.2"


def run_cli(args: list[str], cwd: Path, module: str = "al_sim.run", timeout: float = 300,
            env: dict[str, str] | None = None,
            process: bool | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> <args>`` in ``cwd`` like a user would; capture its output.

    ``process``: in a new interpreter (True) or in this one
    (False, :func:`run_here`); by default a new one only for a sweep (``-m``), whose
    launchers start worker processes that outlive a call. A new process is forked from a
    server that has the libraries imported (tests/fork_server.py)."""
    if process is None:
        process = any(a in ("-m", "--multirun") for a in args)
    if not process:
        return run_here(args, cwd, module=module, env=env, timeout=timeout)
    full_env = cli_env(env)
    return fork_server.run(module, args, cwd, full_env, timeout=timeout,
                           nested=fork_nested.sweep_workers(args))


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, less ``MLFLOW_TRACKING_URI`` (a run then uses the store in
    its folder, as a user's does), with ``env`` on top."""
    return {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **(env or {})}


def start_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None
              ) -> fork_server.Process:
    """``python -m al_sim.run <args>`` started in ``cwd`` as a process of its own, to signal,
    kill or wait on (the store as the run creates it)."""
    return fork_server.start("al_sim.run", args, cwd, cli_env(env),
                             nested=fork_nested.sweep_workers(args))


def submitit_tasks(sweep: Path) -> list[int]:
    """The task processes of this sweep's submitit jobs. Under the local executor each is the
    child of its job's controller, whose pid is the job's id (its folder under ``.submitit``);
    a task forked from its controller (tests/fork_zygote.py) keeps the controller's command
    line, so the command line cannot tell."""
    jobs = [int(d.name) for d in (sweep / ".submitit").glob("*") if d.name.isdigit()]
    return [task for job in jobs for task in children(job)]


def children(pid: int) -> list[int]:
    """Live (not zombie) direct children of ``pid``."""
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid) and not fields["State"].startswith("Z"):
            out.append(int(status.parent.name))
    return out


def run_here(args: list[str], cwd: Path, module: str = "al_sim.run",
             env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` in this process: the module run as ``__main__``, its
    exit status and output, without paying a new interpreter's imports.

    For behaviour that does not depend on being a process of its own (signals, kills and
    start-up stay with real processes). The environment, working directory, argv, signal
    handlers, logging, Hydra's global state, torch's threads and determinism flags and the
    global random states are restored after; a call past ``timeout`` ends the worker with
    every thread's traceback rather than hanging the suite."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv[:]
    saved_hydra = HydraConfig.instance().cfg  # a multirun's stays set after it: sweep_context()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    saved_log = (root.level, root.handlers[:])
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    rng = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        os.chdir(cwd)
        sys.argv = [module, *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                # as __main__, so Hydra finds conf/ beside the module's file as `python -m` does
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                code = exc.code
                if code is not None and not isinstance(code, int):
                    print(code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - an uncaught error is a traceback, exit 1
                traceback.print_exc()
                code = 1
    finally:
        faulthandler.cancel_dump_traceback_later()
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        for handler in root.handlers[:]:
            if handler not in saved_log[1]:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(saved_log[0])
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = saved_hydra
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.random.set_rng_state(rng[2])
    status = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess([module, *args], status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session", autouse=True)
def store_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the empty MLflow store new stores copy (tracking/store_template.py): one
    per test process, not the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("al_sim_cache")
    os.environ["AL_SIM_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dataset():
    """A 3-class synthetic dataset of 300 pool / 150 test images."""
    return load_synthetic(n_pool=300, n_test=150)


@pytest.fixture()
def fast_trainer() -> Trainer:
    """A trainer that fits in a fraction of a second on tiny data."""
    torch.set_num_threads(1)
    conf = TrainerConf(epochs=2, min_steps=4, batch_size=32, eval_batch_size=256)
    return Trainer(conf, Preprocess(PreprocessConf(), channels=1), torch.device("cpu"))


@pytest.fixture()
def rng() -> np.random.Generator:
    """A fixed-seed generator."""
    return np.random.default_rng(0)


def setup_sink(sink, run_dir: Path, name: str = "test"):
    """A callback set up for a fresh run writing into ``run_dir`` (as the entry point does)."""
    from al_sim.core.events import RunInfo

    sink.setup(RunInfo(run_dir=run_dir, launch_dir=run_dir, name=name, tags={}, params={}))
    return sink


def query_context(model, n: int, labeled, seed: int = 0, n_classes: int = 3):
    """A QueryContext over a pool of ``n`` images with ``labeled`` (label 0) taken."""
    from al_sim.strategies.base import QueryContext

    mask = np.zeros(n, dtype=bool)
    mask[np.asarray(labeled, dtype=np.int64)] = True
    return QueryContext(model=model, unlabeled=np.flatnonzero(~mask),
                        labeled=np.flatnonzero(mask),
                        labeled_y=np.zeros(int(mask.sum()), dtype=np.int64),
                        n_classes=n_classes, rng=np.random.default_rng(seed))


def compose_config(overrides: list[str], config_name: str = "config", hydra: bool = False):
    """The config ``python -m al_sim.run <overrides>`` would compose (not validated)."""
    from hydra import compose, initialize_config_dir

    from al_sim.config.registry import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra)


def assert_refused(proc, cwd: Path, words: list[str]) -> str:
    """Exit 2, one ``error:`` line holding ``words``, no traceback, no FINISHED run."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "Error in call to target" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    message = proc.stderr[proc.stderr.index("error:"):]
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    db = cwd / "mlflow.db"
    if db.exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        for run in client.search_runs(all_experiments(client)):
            assert run.info.status != "FINISHED" or "final/aulc" in run.data.metrics
            if run.info.status == "FAILED":
                assert run.data.tags.get("error")
    return message


def refusal(overrides: list[str], launch_dir: Path) -> str:
    """The ``error:`` message ``python -m al_sim.run <overrides>`` gives, found in-process.

    The config is composed as the CLI composes it and the run executed as the CLI's task
    executes it (same validation, data loading, sinks, MLflow store in ``launch_dir``); the
    exception it ends with is mapped by the CLI's own ``error_line``. A bug (no error line)
    or a run that is not refused fails the test.
    """
    from hydra.core.hydra_config import HydraConfig

    from al_sim.run import error_line, execute

    run_dir = next((Path(o.split("=", 1)[1]) for o in overrides
                    if o.startswith("hydra.run.dir=")), launch_dir / "run")
    # a single run: no Hydra job config left set by an earlier test's in-process sweep or stack
    # (Hydra's run_job leaves it), whose sweep would lend this run its MLflow experiment
    saved, HydraConfig.instance().cfg = HydraConfig.instance().cfg, None
    try:
        cfg = compose_config([o for o in overrides if not o.startswith("hydra.")])
        execute(cfg, run_dir, launch_dir)
    except Exception as exc:  # noqa: BLE001 - what the CLI would catch
        line = error_line(exc)
        assert line is not None, f"a bug, not a user error: {type(exc).__name__}: {exc}"
        return line
    finally:
        HydraConfig.instance().cfg = saved
    raise AssertionError(f"not refused: {overrides}")


def assert_failed_runs_only(launch_dir: Path) -> None:
    """Every MLflow run in ``launch_dir``'s store is FAILED with its error tag, none FINISHED."""
    db = launch_dir / "mlflow.db"
    if not db.exists():
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            assert run.info.status == "FAILED", run.info
            assert run.data.tags.get("error")
            assert "final/aulc" not in run.data.metrics


def all_experiments(client: Any) -> list[str]:
    """Every experiment id of a store: a sweep logs into its own experiment (its sweep dir)."""
    return [e.experiment_id for e in client.search_experiments()]
