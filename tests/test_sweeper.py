"""al_sim's default sweeper (``hydra/sweeper=al_basic``): each job's config composed once."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from omegaconf import OmegaConf

from al_sim.app.sweeper import ComposedOnce
from tests.conftest import FAST_CLI, run_cli


class Loader:
    """A config loader that counts the jobs it composes."""

    def __init__(self) -> None:
        self.composed: list[tuple[str, ...]] = []

    def list_groups(self, parent_name):
        return [f"{parent_name}'s groups"]

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed.append(tuple(sweep_overrides))
        return OmegaConf.create({"job": list(sweep_overrides), "seen": master_config.name})


def test_a_job_is_composed_once_and_each_caller_gets_its_own_copy() -> None:
    loader, master = Loader(), OmegaConf.create({"name": "m"})
    once = ComposedOnce(loader, kept_configs=2)
    first = once.load_sweep_config(master, ["seed=0"])
    first.job.append("changed by its caller")
    again = once.load_sweep_config(master, ["seed=0"])
    assert list(again.job) == ["seed=0"] and again.seen == "m"
    again.seen = "changed too"
    assert once.load_sweep_config(master, ["seed=0"]).seen == "m"
    once.load_sweep_config(master, ["seed=1"])
    assert loader.composed == [("seed=0",), ("seed=1",)]
    # another master config (equal, not the same) composes anew
    once.load_sweep_config(OmegaConf.create({"name": "m"}), ["seed=0"])
    assert loader.composed[-1] == ("seed=0",) and len(loader.composed) == 3
    # past kept_configs (2), a job is composed at each use
    once.load_sweep_config(master, ["seed=2"])
    once.load_sweep_config(master, ["seed=2"])
    assert loader.composed[-2:] == [("seed=2",), ("seed=2",)]
    once.load_sweep_config(master, ["seed=1"])
    assert len(loader.composed) == 5  # the first two are still kept
    assert once.list_groups("hydra") == ["hydra's groups"]  # the rest is the wrapped loader's


def test_a_worker_process_gets_the_loader_with_nothing_composed() -> None:
    once = ComposedOnce(Loader(), kept_configs=2)
    once.load_sweep_config(OmegaConf.create({"name": "m"}), ["seed=0"])
    copy = pickle.loads(pickle.dumps(once))
    assert isinstance(copy, ComposedOnce) and copy._composed == {}
    assert copy._loader.composed == [("seed=0",)]  # the loader itself, as it was


@pytest.mark.slow
def test_a_sweep_composes_each_job_once(tmp_path: Path, monkeypatch) -> None:
    """Hydra checks the batch, the stacked launcher skips finished jobs and plans the stacks,
    then runs them in its own process: four uses of each job's config, one composition."""
    composed = []
    real = ConfigLoaderImpl.load_sweep_config

    def counted(self, master_config, sweep_overrides):
        composed.append(tuple(sweep_overrides))
        return real(self, master_config, sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", counted)
    out = run_cli(["-m", "strategy=random", "seed=0,1", "budget=tiny", "budget.rounds=1",
                   *FAST_CLI, "tracking.enabled=false", "tracking.query_grids=false",
                   "hydra/launcher=al_stack", "hydra.launcher.stack_size=2",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, process=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 job(s) ran as 1 stack(s)" in out.stderr
    assert sorted(job[:2] for job in composed) == [("strategy=random", "seed=0"),
                                                   ("strategy=random", "seed=1")]
    assert len(list((tmp_path / "sweep").glob("*/metrics.csv"))) == 2


@pytest.mark.parametrize("kept", [-1, "lots", True, 2.5])
def test_kept_configs_that_is_not_a_count_is_a_config_error(kept: object) -> None:
    from al_sim.app.sweeper import AlBasicSweeper
    from al_sim.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=r"hydra.sweeper.kept_configs=.* is not a number of "
                                          r"job configs; set hydra.sweeper.kept_configs=256"):
        AlBasicSweeper(max_batch_size=None, kept_configs=kept)
    assert AlBasicSweeper(max_batch_size=None, kept_configs=0).kept_configs == 0


def test_a_key_the_sweeper_does_not_take_is_named_before_the_sweep() -> None:
    from al_sim.app.sweep_checks import check_sweeper
    from al_sim.runtime.errors import ConfigError

    node = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/hydra/sweeper/al_basic.yaml")
    check_sweeper(node)  # al_sim's own file passes
    node.kept_config = 5
    with pytest.raises(ConfigError, match=r"hydra.sweeper.kept_config is not a setting.*"
                                          r"conf/hydra/sweeper/.*did you mean "
                                          r"hydra.sweeper.kept_configs\?"):
        check_sweeper(node)
