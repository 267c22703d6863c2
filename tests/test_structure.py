"""The package's layering, checked on the source: who may import whom, and what stays light."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "al_sim"
HEAVY = ("torch", "torchvision", "sklearn")


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (deferred imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules() -> dict[str, set[str]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        out[name] = imports_of(path)
    return out


def loaded_after(code: str) -> set[str]:
    """The modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return set(out.split())


def test_the_report_imports_no_torch_torchvision_or_sklearn() -> None:
    loaded = loaded_after("import al_sim.compare, al_sim.report.build")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.parametrize("module", ["al_sim.core.events", "al_sim.tracking.contract",
                                    "al_sim.config.registry", "al_sim.run"])
def test_light_modules_stay_light(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert not loaded & {*HEAVY, "mlflow"}, loaded & {*HEAVY, "mlflow"}


def test_a_misspelt_override_fails_before_the_heavy_imports(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "al_sim.run",
                           "strategy=entropi"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: In 'config': Could not find 'strategy/entropi'; Available "
                           "options in 'strategy': badge, bald,"), line
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & {*HEAVY, "mlflow"}, imported & {*HEAVY, "mlflow"}


def test_only_the_entry_layer_imports_the_loop() -> None:
    users = {m for m, deps in modules().items() if "al_sim.core.loop" in deps}
    assert users <= {"al_sim.app.experiment", "al_sim.app.components"}, users


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter's CLI from this interpreter's environment, activated or not."""
    script = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(script), "--config", str(root / "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})


def test_the_layers_hold_and_an_upward_import_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "al_sim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    assert lint_imports(tmp_path).returncode == 0
    loop = tmp_path / "al_sim" / "core" / "loop.py"
    # report.stats imports neither MLflow nor torch: only the layers contract can refuse it
    loop.write_text(loop.read_text() + "\nfrom al_sim.report import stats  # noqa\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "al_sim.core.loop is not allowed to import al_sim.report" in broken.stdout, broken.stdout
    assert "al_sim.core.loop -> al_sim.report.stats" in broken.stdout, broken.stdout


def test_no_sink_imports_another_sink() -> None:
    sinks = {m for m in modules()
             if m.startswith("al_sim.sinks.") and m != "al_sim.sinks.run_plots"}
    for name, deps in modules().items():
        if name in sinks:
            assert not (deps & sinks), f"{name} imports {deps & sinks}"


def test_mlflow_is_imported_by_the_writer_its_store_and_the_reader_only() -> None:
    users = {m for m, deps in modules().items() if any(d.split(".")[0] == "mlflow" for d in deps)}
    assert users == {"al_sim.sinks.mlflow_writer", "al_sim.tracking.store",
                     "al_sim.tracking.store_template", "al_sim.tracking.experiments",
                     "al_sim.report.reader"}, users


def test_hydra_lives_in_the_entry_points_only() -> None:
    users = {m for m, deps in modules().items() if any(d.split(".")[0] == "hydra" for d in deps)}
    launchers = {m for m in modules() if m.startswith("al_sim.app.launchers.")}
    assert users <= {"al_sim.run", "al_sim.compare", "al_sim.app.sweep_callback",
                     "al_sim.app.sweep_checks", "al_sim.app.lost_jobs", "al_sim.app.finished_jobs",
                     "al_sim.app.sweeper", "al_sim.config.registry",
                     "al_sim.config.composition", *launchers}, users


def test_no_two_modules_or_classes_share_a_name() -> None:
    """A module's or a class's name says which one it is (a ``base.py`` per package aside)."""
    files: dict[str, list[str]] = {}
    classes: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        where = str(path.relative_to(PACKAGE))
        if path.name not in {"__init__.py", "__main__.py", "base.py"}:
            files.setdefault(path.name, []).append(where)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append(where)
    assert not {n: w for n, w in files.items() if len(w) > 1}
    assert not {n: w for n, w in classes.items() if len(w) > 1}


def test_the_readme_map_names_every_module() -> None:
    """README's Architecture table has a line for each module, or names it on its package's."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Architecture"):]
    section = section[:section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    unnamed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        package = rel.rpartition("/")[0]
        on_package_row = any(
            row.split("|")[1].strip(" `").startswith(f"{package}/")
            and re.search(rf"\b{path.stem}\b", row) for row in rows) if package else False
        if path.name != "__init__.py" and not on_package_row and not any(rel in r for r in rows):
            unnamed.append(rel)
    assert not unnamed, unnamed


def test_modules_stay_short() -> None:
    long = {p.name: n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 320}
    assert not long, long


def test_a_run_without_tracking_never_imports_mlflow(tmp_path: Path) -> None:
    code = ("import sys; from tests.conftest import compose_config; "
            "from al_sim.config.registry import validate; from al_sim.run import build_callbacks; "
            "cfg = compose_config(['tracking.enabled=false']); validate(cfg); "
            "print(len(build_callbacks(cfg)))")
    loaded = loaded_after(code)
    assert "mlflow" not in loaded
    # scipy.stats (~0.7 s of every run's start-up) only where a strategy or the report uses it
    assert "scipy.stats" not in loaded


def test_the_suites_file_order_names_test_files_that_exist() -> None:
    """A renamed file left in ``LONGEST_FIRST`` would silently lose its place in the order."""
    from tests.conftest import LONGEST_FIRST

    assert [n for n in LONGEST_FIRST if not (REPO / "tests" / n).is_file()] == []
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
