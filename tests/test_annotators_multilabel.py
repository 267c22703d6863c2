"""oracle=panel aggregates one class per image: a multi-label dataset is refused at start-up."""

from __future__ import annotations

from tests.conftest import FAST_CLI, assert_failed_runs_only, refusal


def test_panel_refuses_a_multilabel_dataset_and_names_the_simulated_oracle(tmp_path) -> None:
    line = refusal(["oracle=panel", "dataset=synthetic_chest", "budget=tiny", *FAST_CLI],
                   tmp_path)
    assert line.startswith("error:") and "\n" not in line.strip()
    assert "oracle=panel" in line and "multilabel" in line and "oracle=simulated" in line
    assert not (tmp_path / "run" / "annotations.csv").exists()  # refused before any round
    assert_failed_runs_only(tmp_path)


def test_a_multilabel_dataset_runs_with_the_simulated_oracle(tmp_path) -> None:
    # the control: the same dataset is not refused with the alternative the error names
    from al_sim.app.components import build_dataset, build_oracle
    from al_sim.core.oracle import Oracle
    from tests.conftest import compose_config

    cfg = compose_config(["oracle=simulated", "dataset=synthetic_chest", *FAST_CLI])
    dataset = build_dataset(cfg)
    assert dataset.multilabel
    assert isinstance(build_oracle(cfg, dataset, tmp_path), Oracle)
