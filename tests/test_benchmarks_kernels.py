"""The benchmarks that time kernels in-process run with ``--smoke`` too.

A file of their own, so that the two test workers share the benchmarks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_benchmarks import SCRIPTS, smoke, starts_runs

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", [s for s in SCRIPTS if not starts_runs(s)],
                         ids=lambda p: p.name)
def test_smoke_runs_and_prints_figures(script: Path, tmp_path: Path) -> None:
    smoke(script, tmp_path)
