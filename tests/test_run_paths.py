"""Paths checked with the configuration, and run dirs that never collide (issue 27; runs started
together: tests/test_concurrency.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from al_sim.config.data import MedMNISTDatasetConf
from al_sim.runtime.errors import DataError
from tests.conftest import compose_config, run_cli


def test_a_missing_medmnist_root_is_a_config_check(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"dataset.root={tmp_path}/nowhere does not exist.*"
                                        r"breastmnist.npz.*dataset.download=true"):
        MedMNISTDatasetConf(name="breastmnist", root=str(tmp_path / "nowhere"))
    MedMNISTDatasetConf(root=str(tmp_path / "nowhere"), download=True)  # made by the download


@pytest.mark.slow
def test_a_missing_medmnist_root_fails_before_any_run_dir_or_run(tmp_path: Path) -> None:
    proc = run_cli(["dataset=medmnist", "dataset.root=/nonexistent"], tmp_path, timeout=120,
                   process=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "UserWarning" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "dataset.root=/nonexistent does not exist" in errors[0]
    assert list(tmp_path.iterdir()) == []  # no outputs/, no mlflow.db


def test_the_default_run_dir_is_unique_per_process() -> None:
    cfg = compose_config([], hydra=True)
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]
    assert run_dir.startswith("outputs/") and run_dir.endswith(f"-{os.getpid()}")
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["dir"]
    assert sweep == "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}"  # sweep dirs as they were


