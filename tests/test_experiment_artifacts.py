"""The experiment a run logs into: deleted, its artifacts elsewhere than configured, or in a
folder this user cannot write, is one error line before the run exists, naming the fix."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.runtime.errors import TrackingError
from al_sim.tracking.contract import default_artifact_location
from al_sim.tracking.experiments import experiment_id
from al_sim.tracking.retry import RetryPolicy
from al_sim.tracking.store import call_with_retries
from al_sim.tracking.store_template import build_empty_store
from tests.conftest import FAST_CLI, assert_refused, refusal, run_cli


@pytest.fixture()
def client(tmp_path: Path) -> MlflowClient:
    db = tmp_path / "mlflow.db"
    build_empty_store(db)
    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def test_a_deleted_experiment_is_named_with_how_to_restore_it(client: MlflowClient,
                                                                tmp_path: Path) -> None:
    exp = client.create_experiment("study", artifact_location=str(tmp_path / "art"))
    client.delete_experiment(exp)
    with pytest.raises(TrackingError) as err:
        experiment_id(client, "study", None)
    assert "'study' is deleted" in str(err.value)
    assert f"mlflow experiments restore --experiment-id {exp}" in str(err.value)
    assert "tracking.experiment=" in str(err.value)


def test_a_configured_location_must_be_the_experiments_own(client: MlflowClient,
                                                            tmp_path: Path) -> None:
    art = tmp_path / "art"
    exp = experiment_id(client, "study", str(art), configured=True)
    assert client.get_experiment(exp).artifact_location == str(art)
    # the same folder written another way is the same location
    for same in (f"{art}/", str(tmp_path / "." / "art"), art.as_uri()):
        assert experiment_id(client, "study", same, configured=True) == exp
    with pytest.raises(TrackingError) as err:
        experiment_id(client, "study", str(tmp_path / "other"), configured=True)
    assert f"keeps its artifacts at {art}, not at tracking.artifact_location=" in str(err.value)
    # the default location (another launch dir) is no mismatch: the experiment's own is used
    assert experiment_id(client, "study", str(tmp_path / "other"), configured=False) == exp


def test_an_unwritable_location_creates_no_experiment(client: MlflowClient,
                                                      tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for location in (str(blocker), (blocker / "art").as_uri()):
        with pytest.raises(TrackingError) as err:
            experiment_id(client, "study", location, configured=True)
        assert "cannot write the artifacts of experiment 'study'" in str(err.value)
        assert "set tracking.artifact_location=" in str(err.value)
    assert client.get_experiment_by_name("study") is None
    # an experiment whose folder became unwritable: a new experiment is the way out
    art = tmp_path / "art"
    experiment_id(client, "kept", str(art))
    art.rmdir()
    art.write_text("")
    with pytest.raises(TrackingError, match="log into a new one, tracking.experiment="):
        experiment_id(client, "kept", None)


def test_a_relative_location_is_under_the_launch_dir(tmp_path: Path) -> None:
    assert default_artifact_location("art", tmp_path) == str(tmp_path.resolve() / "art")
    assert default_artifact_location("s3://bucket/art", tmp_path) == "s3://bucket/art"
    assert default_artifact_location("file:art", tmp_path) == str(tmp_path.resolve() / "art")
    assert default_artifact_location("file:///x/art", tmp_path) == "file:///x/art"
    assert default_artifact_location(None, tmp_path) == (tmp_path.resolve() / "mlartifacts"
                                                          ).as_uri()


def test_an_upload_that_fails_names_the_artifact_location_not_the_store(
        tmp_path: Path) -> None:
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(TrackingError) as err:
        call_with_retries("artifact upload", full, f"sqlite:///{tmp_path / 'mlflow.db'}",
                          RetryPolicy(retries=0), artifacts="file:///data/art/1/abc/artifacts")
    message = str(err.value)
    assert "failed at file:///data/art/1/abc/artifacts" in message
    assert "free space on the disk holding file:///data/art/1/abc/artifacts" in message
    assert "mlflow.db" not in message


def test_a_run_with_an_unwritable_artifact_location_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = refusal(["budget=tiny", *FAST_CLI, f"tracking.artifact_location={blocker}"],
                   tmp_path)
    assert line.startswith(f"error: cannot write the artifacts of experiment 'al_sim' in "
                           f"{blocker} (a file, not a folder)")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_experiment_by_name("al_sim") is None  # nothing left pointing there


@pytest.mark.slow
def test_a_sweep_into_another_artifact_location_is_refused_before_its_jobs(
        tmp_path: Path) -> None:
    build_empty_store(tmp_path / "mlflow.db")
    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment(
        "al_sim", artifact_location=str(tmp_path / "first"))
    proc = run_cli(["-m", "seed=0,1", "budget=tiny", *FAST_CLI, "tracking.experiment=al_sim",
                    f"tracking.artifact_location={tmp_path / 'second'}"], tmp_path,
                   process=False)  # refused before any job: no worker to outlive the call
    assert_refused(proc, tmp_path, ["tracking.artifact_location=", "tracking.experiment="])
    assert not list(tmp_path.glob("multirun/*/*/*/metrics.csv"))


def test_a_report_that_cannot_be_uploaded_names_the_runs_artifacts_and_the_way_out(
        client: MlflowClient, tmp_path: Path) -> None:
    from al_sim.report.reader import RunReader

    art = tmp_path / "art"
    run = client.create_run(experiment_id(client, "study", str(art)))
    report = tmp_path / "compare"
    report.mkdir()
    (report / "table.md").write_text("| a |\n")
    art.rmdir()
    art.write_text("")  # the experiment's artifact folder is now a file
    with pytest.raises(TrackingError) as err:
        RunReader(client.tracking_uri).log_artifacts(run.info.run_id, report, "compare")
    message = str(err.value)
    assert f"at {run.info.artifact_uri}:" in message
    assert "is a folder this user can write" in message
    assert f"set log_artifacts=false (the report's files are in {report})" in message
