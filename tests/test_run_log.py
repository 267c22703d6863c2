"""The run's log file tells its story; a resume says where it continues in words."""

from __future__ import annotations

from pathlib import Path

from al_sim.run import resume_line
from tests.conftest import run_cli


def test_a_resume_names_the_round_it_continues_with() -> None:
    assert resume_line(Path("out"), -1) == "resuming out at round 0 (no round done yet)"
    assert resume_line(Path("out"), 2) == "resuming out at round 3 (3 round(s) done)"


def test_a_successful_run_leaves_its_story_in_run_log(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_cli(["dataset.n_pool=200", "dataset.n_test=100", "budget.initial=10",
                    "budget.query_size=5", "budget.rounds=1", "trainer.epochs=1",
                    "trainer.min_steps=2", "trainer.num_threads=1", "progress=false",
                    "tracking.enabled=false", f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = (run_dir / "run.log").read_text().splitlines()
    assert any(f"started in {run_dir}" in line for line in lines), lines
    assert [line.split("] - ")[1].split(":")[0] for line in lines if "] - round " in line] == [
        "round 0", "round 1"]
    assert "finished: AULC" in lines[-1]
    assert "finished: AULC" not in done.stdout + done.stderr  # the console has its own table
