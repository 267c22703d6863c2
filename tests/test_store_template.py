"""A new sqlite store is a copy of an empty one kept per MLflow version, or built when that
copy is missing, damaged, used or cannot be kept (al_sim/tracking/store_template.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow.store.db.utils as db_utils
import pytest

from al_sim.tracking.store import open_store
from al_sim.tracking.store_template import template_path
from tests.test_hostile_files import half_built_store


@pytest.fixture()
def builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The stores MLflow builds (runs its migrations for), with an empty cache folder."""
    monkeypatch.setenv("AL_SIM_CACHE_DIR", str(tmp_path / "cache"))
    built: list[object] = []
    real = db_utils._initialize_tables

    def counted(engine: object) -> None:
        built.append(engine)
        real(engine)

    monkeypatch.setattr(db_utils, "_initialize_tables", counted)
    return built


def new_store(folder: Path, monkeypatch: pytest.MonkeyPatch):
    folder.mkdir()
    monkeypatch.chdir(folder)  # MLflow's default experiment stores artifacts below the cwd
    return open_store(f"sqlite:///{folder / 'mlflow.db'}")


def test_the_first_new_store_is_built_and_kept_the_next_copied(
        tmp_path: Path, builds: list[object], monkeypatch: pytest.MonkeyPatch) -> None:
    first = new_store(tmp_path / "a", monkeypatch)
    kept = template_path()
    assert kept is not None and kept.parent == tmp_path / "cache" and kept.is_file()
    second = new_store(tmp_path / "b", monkeypatch)
    assert len(builds) == 1
    for name, client in (("a", first), ("b", second)):
        [default] = client.search_experiments()  # its own default experiment, nothing else
        assert default.name == "Default"
        assert default.artifact_location == str(tmp_path / name / "mlruns" / "0")
        assert client.search_runs(["0"]) == []
        assert client.create_experiment("study") == "1"
    with sqlite3.connect(kept) as con:  # the kept copy stays empty
        assert con.execute("SELECT count(*) FROM experiments").fetchone()[0] == 0


def test_a_kept_copy_that_is_damaged_or_used_is_not_copied(
        tmp_path: Path, builds: list[object], monkeypatch: pytest.MonkeyPatch) -> None:
    new_store(tmp_path / "first", monkeypatch)
    kept = template_path()
    assert kept is not None
    used = new_store(tmp_path / "used", monkeypatch)
    used.create_run("0")
    damaged = {"garbage": lambda: kept.write_bytes(b"not a database" * 100),
               "used": lambda: kept.write_bytes((tmp_path / "used" / "mlflow.db").read_bytes()),
               "half-built": lambda: (kept.unlink(), half_built_store(kept))}
    for name, damage in damaged.items():
        damage()
        before = len(builds)
        client = new_store(tmp_path / f"after_{name}", monkeypatch)
        assert len(builds) > before, name  # built, not copied
        assert client.search_runs(["0"]) == [], name
        with sqlite3.connect(kept) as con:  # and kept anew
            assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0, name


def test_a_cache_that_cannot_be_written_still_gives_a_store(
        tmp_path: Path, builds: list[object], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("AL_SIM_CACHE_DIR", str(tmp_path / "a_file"))
    for name in ("a", "b"):
        assert new_store(tmp_path / name, monkeypatch).search_experiments()[0].name == "Default"
    assert len(builds) == 2
