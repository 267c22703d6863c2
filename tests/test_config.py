"""Every config file composes and validates; bad values fail with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from al_sim.config.store import register_configs, validate
from al_sim.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["dataset", "model", "strategy", "budget", "trainer", "tracking"]
NEEDS = {("dataset", "folder"): ["dataset.root=/nonexistent"]}


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"),
                         [(g, o) for g in GROUPS for o in _options(g)])
def test_every_config_file_composes_and_validates(group: str, option: str) -> None:
    cfg = _compose([f"{group}={option}", *NEEDS.get((group, option), [])])
    validate(cfg)
    assert OmegaConf.to_yaml(cfg, resolve=True)


@pytest.mark.parametrize("option", _options("experiment"))
def test_every_experiment_composes(option: str) -> None:
    validate(_compose([f"experiment={option}"]))


def test_defaults_match_the_design() -> None:
    cfg = _compose([])
    assert cfg.dataset.name == "synthetic" and cfg.model.name == "simple_cnn"
    assert cfg.strategy.name == "entropy" and cfg.budget.name == "default"
    assert cfg.seed == 0


def test_unknown_option_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="strategy"):
        _compose(["strategy=does_not_exist"])


def test_ill_typed_value_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="budget.rounds"):
        _compose(["budget.rounds=many"])


def test_unknown_initial_selection_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="budget.initial_selection"):
        _compose(["budget.initial_selection=smart"])


def test_unknown_key_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException):
        _compose(["budget.round=3"])


@pytest.mark.parametrize(
    ("override", "field"),
    [("budget.query_size=0", "budget.query_size"), ("budget.initial=-5", "budget.initial"),
     ("budget.rounds=-1", "budget.rounds"), ("trainer.lr=0", "trainer.lr"),
     ("model.dropout=1.5", "model.dropout"), ("trainer.device=tpu", "trainer.device"),
     ("trainer.eval_batch_size=0", "trainer.eval_batch_size"),
     ("trainer.eval_batch_size=big", "trainer.eval_batch_size"),
     ("trainer.precision=fp8", "trainer.precision"),
     ("+trainer.eval_batch_table.tpu=64", "trainer.eval_batch_table"),
     ("trainer.eval_batch_table.cpu=0", "trainer.eval_batch_table.cpu"),
     ("trainer.resident_memory_fraction=1.5", "trainer.resident_memory_fraction")],
)
def test_semantic_errors_name_the_field(override: str, field: str) -> None:
    cfg = _compose([override])
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(cfg)
