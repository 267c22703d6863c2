"""Hardening: config values that used to pass composition and fail deep inside (issue 15).

Each is refused before any data is read (one ``error:`` line naming the field and
the fix, checked in-process as the CLI composes and runs), or, when only training
can tell (a diverging learning rate), refused in round 0 with what went wrong:
that one through the real CLI (exit 2, one line, the reason in ``run.log``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import FAST_CLI, assert_refused, compose_config, refusal, run_cli

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
    "callbacks.progress.refresh_s=-1": ["callbacks.progress.refresh_s", ">= 0"],
    "callbacks.run_dir.max_grid_images=-1": ["callbacks.run_dir.max_grid_images", "> 0"],
    "callbacks.mlflow.enabled=off": ["callbacks.mlflow.enabled must be true or false", "'off'"],
    "dataset._target_=nosuch.Loader": ["dataset._target_=nosuch.Loader",
                                       "No module named 'nosuch'", "check the module"],
    "model._target_=SimpleCNN": ["model._target_=SimpleCNN", "not a dotted path"],
    "strategy.name=' '": ["strategy.name is blank", "drop the strategy.name override"],
    "trainer.lr=1e8": ["diverged", "round 0", "trainer.lr"],
}


@pytest.mark.parametrize("override", [o for o in REFUSED if o != "trainer.lr=1e8"])
def test_bad_value_is_refused_with_one_line(override: str, tmp_path: Path) -> None:
    line = refusal([override, "budget=tiny", *FAST_CLI], tmp_path)
    for word in REFUSED[override]:
        assert word in line, f"{word!r} not in: {line}"


# A value out of its range, one per kind of check (schemas, datasets, models, strategies): the
# line gives the override to type, not only the rule.
OUT_OF_RANGE = ["dataset.image_size=8", "dataset.difficulty=2", "dataset.label_noise=1",
                "dataset.preprocess.random_resized_crop_scale=0", "dataset.preprocess.std=[0]",
                "dataset.preprocess.mean=[0.5,0.5]", "dataset.class_proportions=[1]",
                "model.widths=[]", "model.dropout=1", "trainer.precision=fp8",
                "trainer.device=tpu", "trainer.lr_schedule=step",
                "trainer.early_stopping_source=test", "trainer.omp_wait_policy=spin",
                "trainer.eval_batch_size=big", "budget.stop_metric=test/f2",
                "tracking.ui_port=70000", "trainer.lr=-1", "oracle.noise_rate=2"]


@pytest.mark.parametrize("override", OUT_OF_RANGE)
def test_a_value_out_of_range_says_what_to_set(override: str, tmp_path: Path) -> None:
    key = override.split("=", 1)[0]
    line = refusal([override, "budget=tiny", *FAST_CLI], tmp_path)
    assert line.startswith(f"error: {key.rsplit('.', 1)[0]}"), line
    fix = line.split(";")[-1]
    assert ("set " in fix or "e.g." in fix) and f"{key}=" in fix, line


@pytest.mark.slow
def test_a_diverging_run_is_refused_in_round_0_through_the_cli(tmp_path: Path) -> None:
    override = "trainer.lr=1e8"
    proc = run_cli([override, "budget=tiny", *FAST_CLI, f"hydra.run.dir={tmp_path / 'run'}"],
                   tmp_path, timeout=240)
    assert_refused(proc, tmp_path, REFUSED[override])
    assert "Error executing job" not in proc.stderr  # Hydra's own second report of it
    assert REFUSED[override][0] in (tmp_path / "run" / "run.log").read_text()


def test_early_stopping_fraction_on_a_small_labelled_set_still_trains(tmp_path: Path) -> None:
    proc = run_cli(["trainer.early_stopping_fraction=0.95", "trainer.early_stopping_patience=2",
                    "budget.initial=10", "budget.query_size=5", "budget.rounds=1", *FAST_CLI,
                    "tracking.enabled=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with (tmp_path / "run" / "metrics.csv").open() as f:
        assert [r["n_labeled"] for r in csv.DictReader(f)] == ["10", "15"]


@pytest.mark.parametrize("group", ["dataset", "budget", "trainer", "tracking"])
def test_the_options_listed_are_the_users_not_the_schemas(group: str) -> None:
    with pytest.raises(Exception, match=f"Available options in '{group}'") as info:
        compose_config([f"{group}=nonexistent"])
    assert "schema" not in str(info.value).split("Available options")[1].split("Config search")[0]


@pytest.mark.slow
def test_home_paths_reach_the_loader_unexpanded_by_the_shell(tmp_path: Path) -> None:
    proc = run_cli(["dataset=medmnist", "dataset.root=~/.medmnist", "--cfg", "job"], tmp_path,
                   timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "root: ~/.medmnist" in proc.stdout
