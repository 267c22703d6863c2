"""Every benchmark script runs end to end with ``--smoke`` (tiny sizes, seconds): none can rot."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests import fork_nested, fork_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


def starts_runs(script: Path) -> bool:
    """Whether ``script`` times whole al_sim runs (subprocesses), not kernels in-process."""
    return "al_sim.run" in script.read_text()


def test_every_script_is_listed() -> None:
    assert len(SCRIPTS) >= 12


@pytest.mark.parametrize("script", [s for s in SCRIPTS if starts_runs(s)], ids=lambda p: p.name)
def test_smoke_runs_and_prints_figures(script: Path, tmp_path: Path) -> None:
    smoke(script, tmp_path)


def smoke(script: Path, tmp_path: Path) -> None:
    """``python <script> --smoke`` exits 0 and prints figures."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    # the runs it starts fork from it, without a new interpreter's imports (tests/fork_nested.py)
    proc = fork_server.run(str(script), ["--smoke"], tmp_path, env, module=False, timeout=300,
                           nested=fork_nested.MODULES)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(re.search(r"\d", line) for line in proc.stdout.splitlines()), proc.stdout


def test_no_benchmark_imports_a_private_name() -> None:
    private = re.compile(r"^\s*from al_sim\S* import .*\b_\w+", re.MULTILINE)
    assert [s.name for s in SCRIPTS if private.search(s.read_text())] == []
