"""Hardening: config values that used to pass composition and fail deep inside (issue 15).

Each is refused through the real CLI before any data is read (exit 2, one
``error:`` line naming the field and the fix), or, when only training can
tell (a diverging learning rate), refused in round 0 with what went wrong.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import FAST_CLI, assert_refused, run_cli

pytestmark = pytest.mark.slow

# override -> words of the error line
REFUSED = {
    "trainer.lr=nan": ["trainer.lr", "finite"],
    "trainer.weight_decay=inf": ["trainer.weight_decay", "finite"],
    "oracle.noise_rate=nan": ["oracle.noise_rate", "finite"],
    "seed=-1": ["seed", ">= 0", "seed=0"],
    "dataset.seed=-3": ["dataset.seed", ">= 0"],
    "tracking.retries=-1": ["tracking.retries", ">= 0"],
    "tracking.max_grid_images=0": ["tracking.max_grid_images", "> 0"],
    "trainer.batch_size=1": ["trainer.batch_size", ">= 2"],
    "strategy.name=badge": ["strategy.name=badge", "BADGE", "strategy=badge"],
    "trainer.lr=1e8": ["diverged", "round 0", "trainer.lr"],
}


@pytest.mark.parametrize("override", list(REFUSED))
def test_bad_value_is_refused_with_one_line(override: str, tmp_path: Path) -> None:
    proc = run_cli([override, "budget=tiny", *FAST_CLI, f"hydra.run.dir={tmp_path / 'run'}"],
                   tmp_path, timeout=240)
    assert_refused(proc, tmp_path, REFUSED[override])
    assert "Error executing job" not in proc.stderr  # Hydra's own second report of it
    log = (tmp_path / "run" / "run.log")
    if log.exists():  # the run's log file keeps the reason too
        assert REFUSED[override][0] in log.read_text()


def test_early_stopping_fraction_on_a_small_labelled_set_still_trains(tmp_path: Path) -> None:
    proc = run_cli(["trainer.early_stopping_fraction=0.95", "trainer.early_stopping_patience=2",
                    "budget.initial=10", "budget.query_size=5", "budget.rounds=1", *FAST_CLI,
                    "tracking.enabled=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with (tmp_path / "run" / "metrics.csv").open() as f:
        assert [r["n_labeled"] for r in csv.DictReader(f)] == ["10", "15"]


@pytest.mark.parametrize("group", ["dataset", "budget", "trainer", "tracking"])
def test_the_options_listed_are_the_users_not_the_schemas(group: str, tmp_path: Path) -> None:
    proc = run_cli([f"{group}=nonexistent"], tmp_path, timeout=120)
    assert proc.returncode == 2 and f"Available options in '{group}'" in proc.stderr
    assert "schema" not in proc.stderr.split("Available options")[1].split("Config search")[0]


def test_home_paths_reach_the_loader_unexpanded_by_the_shell(tmp_path: Path) -> None:
    proc = run_cli(["dataset=medmnist", "dataset.root=~/.medmnist", "--cfg", "job"], tmp_path,
                   timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "root: ~/.medmnist" in proc.stdout
