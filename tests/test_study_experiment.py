"""A sweep's own MLflow experiment and the one-click comparison link (issue 27)."""

from __future__ import annotations

import json
from urllib.parse import unquote

from omegaconf import OmegaConf

from al_sim.app.sweep_callback import study_experiment
from al_sim.tracking.contract import compare_link, where_to_look


def sweep_config(experiment: str = "al_sim", overrides: tuple[str, ...] = ()) -> object:
    return OmegaConf.create({"tracking": {"experiment": experiment},
                             "hydra": {"sweep": {"dir": "multirun/2026-12-04/04-30-00"},
                                       "overrides": {"task": list(overrides)}}})


def test_a_sweep_left_at_the_default_gets_an_experiment_named_after_its_dir() -> None:
    assert study_experiment(sweep_config()) == "multirun/2026-12-04/04-30-00"


def test_an_experiment_the_user_or_a_study_config_set_is_kept() -> None:
    assert study_experiment(sweep_config("screening")) == "screening"  # experiment=screening
    given = sweep_config("al_sim", ("strategy=random,entropy", "tracking.experiment=al_sim"))
    assert study_experiment(given) == "al_sim"  # set on the command line, even to the default


def test_the_compare_link_opens_mlflows_compare_runs_page_on_the_sweeps_runs() -> None:
    link = compare_link("7", ["b2", "a1"], "http://127.0.0.1:5001/")
    page, query = link.split("?", 1)
    assert page == "http://127.0.0.1:5001/#/compare-runs"
    params = dict(part.split("=", 1) for part in query.split("&"))
    assert json.loads(unquote(params["runs"])) == ["a1", "b2"]
    assert json.loads(unquote(params["experiments"])) == ["7"]
    assert all(c not in query for c in ' "[]')  # one clickable token in a terminal


def test_where_to_look_adds_the_compare_link_only_for_runs_to_compare() -> None:
    lines = where_to_look("http://tracker:5000", "3", compared=["r1", "r2"]).splitlines()
    assert lines[-1].startswith("  compare: open http://tracker:5000/#/compare-runs?runs=")
    assert "compare:" not in where_to_look("http://tracker:5000", "3")
    local = where_to_look("sqlite:///x/mlflow.db", "3", ui_port=5123, compared=["r1"])
    assert "compare: open http://127.0.0.1:5123/#/compare-runs?" in local
