"""What a sweep's jobs share is checked once, before any job or dir exists: the data path
(issue 27), keys appended to a group no job may have, the launcher's worker count."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.conf import ConfigSourceInfo
from omegaconf import open_dict

from al_sim.app.sweep_callback import SweepCallback
from al_sim.app.sweep_checks import check_sweep_config, swept_groups
from al_sim.config.composition import check_bool_files, check_bool_overrides, chosen_files
from al_sim.config.registry import validate
from al_sim.runtime.errors import ConfigError
from tests.conftest import FAST_CLI, compose_config, run_here


def test_a_missing_root_stops_the_sweep_before_its_dir(tmp_path: Path, capsys) -> None:
    overrides = ["dataset=medmnist", f"dataset.root={tmp_path / 'nowhere'}"]
    cfg = compose_config(overrides, hydra=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "multirun")
        cfg.hydra.overrides.task = [*overrides, "seed=0,1"]
    with pytest.raises(SystemExit) as exit_:
        SweepCallback().on_multirun_start(cfg)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: dataset.root={tmp_path / 'nowhere'} "
                                               "does not exist")
    assert not (tmp_path / "multirun").exists()


@pytest.mark.parametrize(("sweep", "refused"), [
    (["seed=0,1"], True),                      # every job would have trainer.epoch: refused
    (["trainer.epochs=1,2"], False),           # trainer swept: each job checks its own
    (["trainer=default", "seed=0,1"], True)])  # a chosen group that is not swept: refused
def test_a_key_every_job_would_append_stops_the_sweep_before_its_dir(
        tmp_path: Path, capsys, sweep: list[str], refused: bool) -> None:
    cfg = compose_config(["+trainer.epoch=2"], hydra=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "multirun")
        cfg.hydra.overrides.task = ["+trainer.epoch=2", *sweep]
    if not refused:
        check_sweep_config(cfg)  # passes: the jobs check their own trainer
        return
    with pytest.raises(SystemExit) as exit_:
        SweepCallback().on_multirun_start(cfg)
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: trainer.epoch is not a setting") and "trainer.epochs?" in line
    assert not (tmp_path / "multirun").exists()


@pytest.mark.parametrize("n_jobs", [0, 1.5, "two", True])
def test_a_worker_count_joblib_cannot_take_is_one_config_error(n_jobs: object) -> None:
    from al_sim.app.launchers.common import check_n_jobs
    from al_sim.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"hydra.launcher.n_jobs={n_jobs} is not a number of "
                                          "worker processes; set hydra.launcher.n_jobs=2"):
        check_n_jobs(n_jobs)
    for fine in (None, 1, 2, -1, -2):
        check_n_jobs(fine)


@pytest.mark.parametrize(("launcher", "said"), [
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
     "hydra.launcher.n_jobs=0 is not a number of worker processes"),
    (["hydra/launcher=joblib", "hydra.launcher.prefer=nosuch"],
     "a hydra.launcher setting is refused by joblib: prefer=nosuch is not a valid backend hint"),
    (["hydra/launcher=joblib", "hydra.launcher.pre_dispatch=zz"],  # read only at launch
     "a hydra.launcher setting is refused by joblib: 'zz' is not a valid or supported "
     "arithmetic expression; fix it"),
    (["hydra/launcher=joblib", "hydra.launcher.pre_dispatch=0.5"],  # joblib: no job, no error
     "a hydra.launcher setting is refused by joblib: pre_dispatch=0.5 must be 'all', or a "
     "number or an expression of n_jobs such as '2*n_jobs' of at least 1"),
    (["hydra/launcher=al_stack", "hydra.launcher.n_jobs=2", "hydra.launcher.pre_dispatch=0"],
     "a hydra.launcher setting is refused by joblib: pre_dispatch=0 must be"),  # built on joblib
    (["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=0"],
     "hydra.launcher.timeout_min=0 is not a time limit"),
    (["hydra/launcher=joblib", "+hydra.launcher.njobs=4"],  # joblib's backend ignored it
     "hydra.launcher.njobs is not a setting: hydra.launcher has no key 'njobs' "
     "(conf/hydra/launcher/); did you mean hydra.launcher.n_jobs?"),
    (["hydra/launcher=al_stack", "+hydra.launcher.stack_sizes=4"],  # an untyped launcher
     "hydra.launcher.stack_sizes is not a setting: hydra.launcher has no key 'stack_sizes' "
     "(conf/hydra/launcher/); did you mean hydra.launcher.stack_size?"),
    (["hydra/launcher=al_submitit_local", "+hydra.launcher.stack_size=4"],  # not a stack's
     "hydra.launcher.stack_size is not a setting"),
    (["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=1",
      "hydra.launcher.signal_delay_s=120"],
     "hydra.launcher.timeout_min=1 is not longer than hydra.launcher.signal_delay_s=120")])
def test_hydras_own_launchers_with_settings_no_job_survives_stop_before_the_sweep_dir(
        tmp_path: Path, capsys, launcher: list[str], said: str) -> None:
    """Only al_sim's launchers checked these: Hydra's joblib launcher with n_jobs=0 (or a
    setting joblib.Parallel refuses, or a pre_dispatch it reads only at launch) was joblib's
    ValueError (or, below one job, a sweep that ran nothing), its submitit one with
    timeout_min=0 jobs that all ended without a result, tracebacks after the sweep's parent
    run was made."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='pip install -e ".[slurm]"')
    cfg = compose_config(launcher, hydra=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "multirun")
        cfg.hydra.overrides.task = ["seed=0,1"]
    with pytest.raises(SystemExit) as exit_:
        SweepCallback().on_multirun_start(cfg)
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {said}")
    assert not (tmp_path / "multirun").exists()


@pytest.mark.parametrize(("sweep", "said"), [
    (["seed=0,1,1"], "the sweep repeats seed=1 (seed=0,1,1)"),
    (["strategy=random,entropy,random", "seed=0,1"],
     "the sweep repeats strategy=random (strategy=random,entropy,random)")])
def test_a_value_swept_twice_is_refused_before_the_sweep_dir(
        tmp_path: Path, capsys, sweep: list[str], said: str) -> None:
    """Hydra runs ``seed=0,1,1`` as three jobs, two of them the same run: the report would
    count the copy as another seed (n inflated, the spread and p-values too small)."""
    cfg = compose_config([], hydra=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "multirun")
        cfg.hydra.overrides.task = sweep
    with pytest.raises(SystemExit) as exit_:
        SweepCallback().on_multirun_start(cfg)
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {said}") and line.endswith("drop the repeat")
    assert not (tmp_path / "multirun").exists()
    check_sweep_config(compose_config([], hydra=True))  # no sweep, nothing repeated


def test_a_swept_dataset_is_left_to_each_job() -> None:
    assert "dataset" in swept_groups(["dataset.root=/a,/b", "seed=0"])
    assert "dataset" in swept_groups(["dataset=medmnist,folder"])
    assert "dataset" not in swept_groups(["dataset.root=/a", "seed=0,1", "strategy=margin,entropy"])


@pytest.mark.parametrize(("cores", "warned"), [(2, True), (4, False)])
def test_submitit_local_says_when_its_jobs_outnumber_the_cores(monkeypatch, caplog, cores: int,
                                                               warned: bool) -> None:
    from al_sim.app import sweep_checks

    cfg = compose_config(["hydra/launcher=al_submitit_local"], hydra=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["strategy=random,entropy", "seed=0,1"]
    monkeypatch.setattr(sweep_checks.os, "cpu_count", lambda: cores)
    with caplog.at_level("WARNING", logger=sweep_checks.log.name):
        sweep_checks.warn_unbounded_launcher(cfg)
    said = "submitit_local starts all 4 jobs at once on 2 cores" in caplog.text
    assert said == warned and ("n_jobs=2" in caplog.text) == warned


def test_the_launchers_timings_have_one_home_the_sweep_callback() -> None:
    from al_sim.app.launchers.common import launcher_settings
    from al_sim.runtime.errors import ConfigError

    cfg = compose_config(["hydra.callbacks.sweep.connect_timeout_s=3"], hydra=True)
    assert launcher_settings(cfg) == (10.0, 120.0, 3.0)  # conf/config.yaml's, as overridden
    with open_dict(cfg):
        del cfg.hydra.callbacks["sweep"]
    with pytest.raises(ConfigError, match="hydra.callbacks.sweep .conf/config.yaml."):
        launcher_settings(cfg)


@pytest.mark.parametrize("value", ["abc", None, True, float("nan"), -1.0])
def test_a_sweep_timing_of_the_wrong_kind_is_one_line_naming_it(value: object) -> None:
    """A word reached float comparison: 'Error in call to target ...: TypeError(...)'."""
    from al_sim.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^hydra.callbacks.sweep.status_poll_s must be "):
        SweepCallback(status_poll_s=value)  # type: ignore[arg-type]  # what a config can hold


def _sweep_cfg(tmp_path: Path, sweep_dir: Path):
    cfg = compose_config(["tracking.enabled=false"], hydra=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(sweep_dir)
        cfg.hydra.overrides.task = ["tracking.enabled=false", "seed=0,1"]
    return cfg


@pytest.mark.parametrize("record", ['{"sweep_id": ', "[1, 2]", '{"sweep_id": 3}'])
def test_a_damaged_sweep_record_stops_the_sweep_naming_the_file(tmp_path: Path, capsys,
                                                                record: str) -> None:
    """Hydra only warns about a callback's exception and launches anyway: every job then
    failed on the record (a TypeError each). One line instead, before any job."""
    sweep = tmp_path / "multirun"
    sweep.mkdir()
    (sweep / "al_sim_sweep.json").write_text(record)
    with pytest.raises(SystemExit) as exit_:
        SweepCallback().on_multirun_start(_sweep_cfg(tmp_path, sweep))
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {sweep / 'al_sim_sweep.json'} is not a sweep record")
    assert "hydra.sweep.dir" in line


def test_a_sweep_dir_that_cannot_be_made_stops_the_sweep(tmp_path: Path, capsys) -> None:
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as exit_:
        SweepCallback().on_multirun_start(_sweep_cfg(tmp_path, tmp_path / "a_file" / "sw"))
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: Not a directory: {tmp_path / 'a_file' / 'sw'}; ")
    assert line.endswith("or set hydra.sweep.dir elsewhere")


def test_hydra_failing_to_open_its_log_in_the_run_dir_is_the_file_and_the_fix() -> None:
    """A read-only run dir: logging's 'Unable to configure handler' hides the OSError."""
    from al_sim.run import error_line

    try:
        try:
            raise OSError(30, "Read-only file system", "/runs/x/run.log")
        except OSError as exc:
            raise ValueError("Unable to configure handler 'file'") from exc
    except ValueError as wrapped:
        assert error_line(wrapped) == (
            "error: Read-only file system: /runs/x/run.log; make it writable for this user, or "
            "set hydra.run.dir / hydra.sweep.dir (outputs) or tracking.uri (the store) elsewhere")


def test_a_store_down_at_the_sweeps_end_still_reports_the_failed_jobs(tmp_path: Path, capsys,
                                                                      monkeypatch) -> None:
    """Hydra only warns about a callback's exception: a parent run that could not be closed
    made a sweep with a failed job exit 0, its failures unlisted."""
    from al_sim.app import sweep_callback
    from al_sim.app.sweep_parent import SweepParent
    from al_sim.runtime.errors import TrackingError
    from al_sim.tracking import store

    def down(*args: object, **kwargs: object) -> None:
        raise TrackingError("MLflow run end failed at http://127.0.0.1:9: refused")

    monkeypatch.setattr(store, "tag_run", down)
    monkeypatch.setattr(store, "end_run", down)
    sweep = tmp_path / "multirun"
    (sweep / "failed_jobs").mkdir(parents=True)
    (sweep / "failed_jobs" / "1.txt").write_text("seed=1\nerror: boom\n")
    callback = SweepCallback()
    callback._parent, callback._experiment_id = SweepParent("http://127.0.0.1:9", "p1d"), "1"
    monkeypatch.setattr(callback, "_log_summaries", lambda: None)
    monkeypatch.setattr(callback, "_job_runs", lambda: [])
    with pytest.raises(SystemExit) as exit_:
        callback.on_multirun_end(_sweep_cfg(tmp_path, sweep))
    assert exit_.value.code == sweep_callback.EXIT_SWEEP_FAILED
    err = capsys.readouterr().err
    assert "note: the sweep's parent MLflow run p1d could not be closed" in err
    assert "  job 1 [seed=1]: error: boom" in err


@pytest.mark.parametrize("value", ["true", "false", "yes", "Off", "0", "1"])
def test_a_bool_word_or_0_1_is_taken(value: str) -> None:
    cfg = compose_config([f"progress={value}"])
    check_bool_overrides(cfg, [f"progress={value}", f"tracking.enabled={value},true",
                               "experiment=screening", "+a.b=1", "hydra.job.chdir=false",
                               "tracking.query_grids=${oc.env:GRIDS,true}"])


@pytest.mark.parametrize(("override", "said"), [
    ("progress=2", "progress is true or false, got 2 (progress=2)"),
    ("tracking.enabled=true,-1", "tracking.enabled is true or false, got -1"),
    ("trainer.deterministic='2'", "trainer.deterministic is true or false, got '2'")])
def test_another_value_for_a_bool_is_refused_not_read_as_true(override: str, said: str) -> None:
    """OmegaConf reads any integer but 0 as true: ``progress=2`` ran with progress on."""
    with pytest.raises(ConfigError, match=re.escape(said)):
        check_bool_overrides(compose_config([]), ["seed=0", override])


def test_a_bool_given_2_stops_a_single_run_and_a_sweep_before_their_dirs(
        tmp_path: Path, capsys) -> None:
    cfg = compose_config([], hydra=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "multirun")
        cfg.hydra.overrides.task = ["tracking.query_grids=true,2", "seed=0,1"]
    for start in (SweepCallback().on_run_start, SweepCallback().on_multirun_start):
        with pytest.raises(SystemExit) as exit_:
            start(cfg)
        assert exit_.value.code == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line == ("error: tracking.query_grids is true or false, got 2 "
                        "(tracking.query_grids=true,2); set tracking.query_grids=true or "
                        "tracking.query_grids=false")
    assert not (tmp_path / "multirun").exists()


def test_a_constructors_true_false_knob_given_2_is_refused_by_each_run() -> None:
    """``strategy.cost_aware`` is typed from Entropy's signature only in ``validate`` (each run
    or job; a sweep's launcher imports no strategy): it too read 2 as true (a run with
    cost-aware scoring it was not asked for, with oracle=panel)."""
    said = "strategy.cost_aware is true or false, got 2 (strategy.cost_aware=2)"
    with pytest.raises(ConfigError, match=re.escape(said)):
        validate(compose_config(["strategy.cost_aware=2"]), ["strategy.cost_aware=2"])



@pytest.mark.parametrize(("choice", "task", "said"), [
    ([], ["strategy.cost_aware=true,2"], "strategy.cost_aware is true or false, got 2"),
    (["model=resnet18"], ["model=resnet18", "model.pretrained=-1"],
     "model.pretrained is true or false, got -1"),
    ([], ["strategy=entropy,margin", "strategy.cost_aware=2"], None),  # each job's class
    (["model=resnet18"], ["model=resnet18", "model.small_input_stem=auto"], None)])
def test_a_sweep_refuses_a_constructors_true_false_knob_once_before_its_jobs(
        tmp_path: Path, capsys, choice: list[str], task: list[str], said: str | None) -> None:
    """The strategy's and model's own knobs are typed at the sweep's start when a value is
    not true/false (it was each job's error, exit 1, after the sweep dir and parent run)."""
    cfg = compose_config([o for o in task if "," not in o], hydra=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "multirun")
        cfg.hydra.overrides.task = [*task, "seed=0,1"]
    if said is None:
        check_sweep_config(cfg)  # nothing refused here: a swept choice is each job's to check
        return
    with pytest.raises(SystemExit) as exit_:
        SweepCallback().on_multirun_start(cfg)
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {said}") and not (tmp_path / "multirun").exists()



def test_a_sweep_refuses_a_constructors_true_false_knob_given_2_in_a_config_file(
        tmp_path: Path) -> None:
    """``cost_aware: 2`` in the user's strategy file (or an experiment's) is refused by the
    sweep's start naming the file, as the schema's knobs are."""
    from al_sim.config.registry import check_typed_bool_overrides

    mine = tmp_path / "mine.yaml"
    mine.write_text("# @package _global_\nstrategy:\n  cost_aware: 2\n")
    cfg = compose_config(["strategy.cost_aware=2"])  # as the file composed it
    with pytest.raises(ConfigError, match=re.escape(
            f"strategy.cost_aware is true or false, got 2 in {mine}")):
        check_typed_bool_overrides(cfg, ["seed=0,1"], [(mine, "experiment")])
    check_typed_bool_overrides(cfg, ["strategy=entropy,margin"], [(mine, "experiment")])


def test_the_config_files_a_run_read_are_found_with_their_packages(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    for name in ("config.yaml", "experiment/mine.yaml"):
        (tmp_path / name).write_text("{}\n")
    sources = [{"schema": "pkg", "path": "hydra.conf"}, {"schema": "file", "path": str(tmp_path)}]
    choices = {"experiment": "mine", "_schemas/trainer@trainer": "trainer", "strategy": None,
               "hydra/launcher": "joblib", "trainer": "default"}  # the last two: not on disk
    assert chosen_files(sources, choices, "config") == [
        (tmp_path / "config.yaml", ""), (tmp_path / "experiment" / "mine.yaml", "experiment")]


@pytest.mark.parametrize(("text", "package", "said"), [
    ("# @package _global_\ntracking:\n  enabled: 2\n", "experiment", "tracking.enabled"),
    ("deterministic: -1\n", "trainer", "trainer.deterministic"),
    ("defaults:\n  - _self_\nprogress: maybe\n", "", "progress")])
def test_a_true_false_value_in_a_config_file_is_refused_naming_the_file(
        tmp_path: Path, text: str, package: str, said: str) -> None:
    """OmegaConf read ``enabled: 2`` in a user's experiment file as true, as on the command
    line."""
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{said} is true or false, got ") +
                       rf".* in {re.escape(str(path))}; write true or false there"):
        check_bool_files(compose_config([]), [(path, package)])
    path.write_text(text.replace("2", "yes").replace("-1", "0")
                    .replace("maybe", "${oc.env:PROGRESS,false}"))
    check_bool_files(compose_config([]), [(path, package)])  # words, 0/1, interpolations


def test_a_users_experiment_file_with_enabled_2_stops_the_run(tmp_path: Path) -> None:
    conf = tmp_path / "my_conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text("# @package _global_\ntracking:\n  query_grids: 2\n")
    proc = run_here(["experiment=mine", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]",
                     "budget=tiny", *FAST_CLI], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert line == (f"error: tracking.query_grids is true or false, got 2 in "
                    f"{conf / 'mine.yaml'}; write true or false there")


def test_a_sweep_whose_config_file_says_enabled_2_stops_before_its_dir(tmp_path: Path,
                                                                         capsys) -> None:
    conf = tmp_path / "experiment"
    conf.mkdir()
    (conf / "mine.yaml").write_text("# @package _global_\ntracking:\n  enabled: 2\n")
    cfg = compose_config([], hydra=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "multirun")
        cfg.hydra.overrides.task = ["seed=0,1"]
        cfg.hydra.runtime.choices.experiment = "mine"
        cfg.hydra.runtime.config_sources.append(
            ConfigSourceInfo(path=str(tmp_path), schema="file", provider="user"))
    for start in (SweepCallback().on_run_start, SweepCallback().on_multirun_start):
        with pytest.raises(SystemExit) as exit_:
            start(cfg)
        assert exit_.value.code == 2
        assert capsys.readouterr().err == (f"error: tracking.enabled is true or false, got 2 in "
                                           f"{conf / 'mine.yaml'}; write true or false there\n")
    assert not (tmp_path / "multirun").exists()
