"""OpenMP threads sleep instead of spinning while they wait, unless the user says (issue 27)."""

from __future__ import annotations

import os

import pytest

from al_sim.config.schema import TrainerConf
from al_sim.runtime.errors import ConfigError
from al_sim.runtime.openmp import set_omp_wait_policy


def test_passive_by_default_and_the_users_own_setting_wins(monkeypatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    set_omp_wait_policy(TrainerConf().omp_wait_policy)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    set_omp_wait_policy("passive")
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    set_omp_wait_policy(None)  # null: the library's own default
    assert "OMP_WAIT_POLICY" not in os.environ
    with pytest.raises(ConfigError, match="trainer.omp_wait_policy must be passive, active"):
        TrainerConf(omp_wait_policy="lazy")
