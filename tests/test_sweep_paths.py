"""A sweep's shared data path is checked once, before any job or dir exists (issue 27)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import open_dict

from al_sim.app.sweep_callback import SweepCallback, data_swept
from tests.conftest import compose_config


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


def test_a_swept_dataset_is_left_to_each_job() -> None:
    assert data_swept(["dataset.root=/a,/b", "seed=0"])
    assert data_swept(["dataset=medmnist,folder"])
    assert not data_swept(["dataset.root=/a", "seed=0,1", "strategy=margin,entropy"])


@pytest.mark.parametrize(("cores", "warned"), [(2, True), (4, False)])
def test_submitit_local_says_when_its_jobs_outnumber_the_cores(monkeypatch, caplog, cores: int,
                                                               warned: bool) -> None:
    from al_sim.app import sweep_callback

    cfg = compose_config(["hydra/launcher=al_submitit_local"], hydra=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["strategy=random,entropy", "seed=0,1"]
    monkeypatch.setattr(sweep_callback.os, "cpu_count", lambda: cores)
    with caplog.at_level("WARNING", logger=sweep_callback.log.name):
        sweep_callback.warn_unbounded_launcher(cfg)
    said = "submitit_local starts all 4 jobs at once on 2 cores" in caplog.text
    assert said == warned and ("n_jobs=2" in caplog.text) == warned
