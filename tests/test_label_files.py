"""The labelling page's API and its refusals, Label Studio round trips, bad import files."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from al_sim.label.batch import ANSWERS_FILE, IMAGES_DIR, LS_TASKS_FILE, Batch
from al_sim.label.importer import import_labels
from al_sim.label.web import create_app
from al_sim.runtime.errors import LabelError
from tests.conftest import run_cli
from tests.label_helpers import small_batch
from tests.test_structure import loaded_after

TOKEN = "s3cret-token"


@pytest.fixture()
def batch(tmp_path: Path) -> Batch:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"private")
    return small_batch(tmp_path / "run")


def client(batch: Batch, suggest: bool = False):
    app = create_app(batch, batch.dir.parents[1], {"dr.who": TOKEN}, suggest)
    return app.test_client()


def answers(batch: Batch) -> list[dict[str, str]]:
    path = batch.dir / ANSWERS_FILE
    return list(csv.DictReader(path.open())) if path.exists() else []


def post(c, path: str, body: dict):
    return c.post(path, json=body, headers={"X-Token": TOKEN})


def test_every_request_needs_the_token(batch: Batch) -> None:
    c = client(batch)
    for path in ("/", "/page.js", "/viewer.js", "/api/batch", f"/image/{batch.images[0]}"):
        assert c.get(path).status_code == 403
        assert c.get(path + "?token=wrong").status_code == 403
        assert c.get(path, headers={"X-Token": TOKEN}).status_code == 200
    assert c.post("/api/label", json={"image": batch.images[0], "label": "benign"}
                  ).status_code == 403
    assert answers(batch) == []


def test_only_the_batch_images_are_served(batch: Batch, tmp_path: Path) -> None:
    c = client(batch)
    ok = c.get(f"/image/{batch.images[0]}?token={TOKEN}")
    assert ok.status_code == 200 and ok.mimetype == "image/png"
    for bad in ("0009999.png", "../batch.json", "..%2F..%2Fcheckpoint.pt", "%2Fetc%2Fpasswd",
                "../../checkpoint.pt", "images/../batch.json"):
        response = c.get(f"/image/{bad}?token={TOKEN}", follow_redirects=True)
        assert response.status_code == 404, bad
        assert b"private" not in response.data
    # A symlink in the batch pointing out of the run dir is not followed.
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"secret")
    target = batch.dir / IMAGES_DIR / batch.images[1]
    target.unlink()
    os.symlink(outside, target)
    assert c.get(f"/image/{batch.images[1]}?token={TOKEN}").status_code == 404


def test_labels_are_checked_written_at_once_and_survive_a_double_submit(batch: Batch) -> None:
    c = client(batch)
    first = batch.images[0]
    for body in ({"image": "0009999.png", "label": "benign"},
                 {"image": first, "label": "cyst"}, {"image": first}, {"label": "benign"}):
        response = post(c, "/api/label", body)
        assert response.status_code == 400 and response.json["error"], body
    assert c.post("/api/label", data="not json", headers={"X-Token": TOKEN}).status_code == 400
    assert answers(batch) == []

    for _ in range(2):  # a double click sends the same answer twice
        response = post(c, "/api/label", {"image": first, "label": "malignant"})
        assert response.status_code == 200 and response.json["labelled"] == 1
    rows = answers(batch)
    assert [(r["image"], r["label"], r["annotator"]) for r in rows] == [
        (first, "malignant", "dr.who")]
    assert rows[0]["labelled_at"].endswith("+00:00")

    post(c, "/api/label", {"image": batch.images[1], "label": "benign"})
    undone = post(c, "/api/undo", {})
    assert undone.json == {"image": batch.images[1], "labelled": 1, "total": 4}
    assert [r["image"] for r in answers(batch)] == [first]
    refused = post(c, "/api/done", {})
    assert refused.status_code == 400 and "3 of 4 images still have no label" in \
        refused.json["error"]
    for image in batch.images[1:]:
        post(c, "/api/label", {"image": image, "label": "benign"})
    assert post(c, "/api/done", {}).status_code == 200
    assert json.loads((batch.dir / "done.json").read_text())["annotator"] == "dr.who"


def test_an_answer_that_cannot_be_saved_says_so_to_the_expert_and_the_operator(
        batch: Batch, monkeypatch, capsys) -> None:
    """A full disk under the run dir: the expert reads 'not saved' (not Flask's 500 page),
    the terminal running the page reads the file and the fix, and nothing is recorded."""
    import errno

    from al_sim.runtime import files

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    reply = post(client(batch), "/api/label", {"image": batch.images[0], "label": "benign"})
    assert reply.status_code == 503
    assert reply.get_json()["error"].startswith("not saved: No space left on device; the "
                                                "answer is not recorded")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: No space left on device: {batch.dir / ANSWERS_FILE}; free space on "
                   "that disk, or put the run dir on another one"]
    monkeypatch.undo()
    assert answers(batch) == []


def test_a_file_the_page_cannot_read_is_not_called_an_unsaved_answer(
        batch: Batch, monkeypatch, capsys) -> None:
    import errno

    from al_sim.label import web

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(web, "send_file", denied)
    reply = client(batch).get(f"/image/{batch.images[0]}?token={TOKEN}")
    assert reply.status_code == 503
    assert reply.get_json()["error"] == ("cannot read: Permission denied; tell whoever runs this "
                                         "page, then reload it")
    assert capsys.readouterr().err.startswith("error: Permission denied")


def test_the_model_suggestion_is_off_unless_asked_for(batch: Batch) -> None:
    plain = client(batch).get("/api/batch", headers={"X-Token": TOKEN}).json
    assert all("suggestion" not in i for i in plain["images"])
    shown = client(batch, suggest=True).get("/api/batch", headers={"X-Token": TOKEN}).json
    assert shown["images"][0]["suggestion"] == {"label": "benign", "confidence": 0.6}


def label_studio_export(batch: Batch, choices: dict[int, str]) -> list[dict]:
    """What Label Studio's JSON export holds after labelling our tasks file (task k -> choice)."""
    tasks = json.loads((batch.dir / LS_TASKS_FILE).read_text())
    out = []
    for k, task in enumerate(tasks):
        annotations = [] if k not in choices else [{
            "id": 100 + k, "completed_by": {"id": 1, "email": "rad@example.org"},
            "was_cancelled": False, "lead_time": 3.2, "created_at": "2026-11-26T10:00:00Z",
            "result": [{"id": f"r{k}", "type": "choices", "from_name": "label",
                        "to_name": "image", "origin": "manual",
                        "value": {"choices": [choices[k]]}}]}]
        out.append({"id": 1 + k, "data": task["data"], "annotations": annotations,
                    "predictions": [], "meta": {}, "file_upload": "tasks.json"})
    return out


def test_a_label_studio_json_export_of_our_tasks_comes_back(batch: Batch, tmp_path: Path) -> None:
    export = tmp_path / "project-1-at-2026.json"
    export.write_text(json.dumps(label_studio_export(batch, {0: "malignant", 2: "benign"})))
    assert import_labels(export, batch, "me") == 2  # task 1 and 3 skipped: still unlabelled
    rows = {r["image"]: r for r in answers(batch)}
    assert rows[batch.images[0]]["label"] == "malignant"
    assert rows[batch.images[0]]["annotator"] == "rad@example.org"
    assert set(rows) == {batch.images[0], batch.images[2]}
    assert batch.missing() == [batch.images[1], batch.images[3]]


def test_label_studio_csv_and_plain_file_label_csv(batch: Batch, tmp_path: Path) -> None:
    tasks = json.loads((batch.dir / LS_TASKS_FILE).read_text())
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["annotation_id", "annotator", "created_at", "file", "id", "image", "label",
                     "lead_time", "pool_index", "round", "updated_at"])
    for k, t in enumerate(tasks[:2]):
        d = t["data"]
        writer.writerow([k, "rad@example.org", "", d["file"], d["id"], d["image"], "benign", 1,
                         d["pool_index"], d["round"], ""])
    (tmp_path / "ls.csv").write_text(out.getvalue())
    assert import_labels(tmp_path / "ls.csv", batch, "me") == 2
    # Any file,label CSV, naming the images by the dataset's own file names.
    (tmp_path / "plain.csv").write_text("file,label\np002.png,malignant\np003.png,benign\n")
    assert import_labels(tmp_path / "plain.csv", batch, "dr.no") == 2
    rows = {r["image"]: (r["label"], r["annotator"]) for r in answers(batch)}
    assert rows == {batch.images[0]: ("benign", "rad@example.org"),
                    batch.images[1]: ("benign", "rad@example.org"),
                    batch.images[2]: ("malignant", "dr.no"), batch.images[3]: ("benign", "dr.no")}


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty"),
    ("[{\"data\": {\"file\": ", "is not valid JSON"),
    ("name;class\np000.png;benign\n", "needs a header with `file`"),
    ("file,label\np000.png,benign\nghost.png,benign\n", "not in the round 1 batch: ghost.png"),
    ("file,label\np000.png,cyst\n", "'cyst' are not classes|cyst are not classes"),
    ("file,label\np000.png,benign\np000.png,malignant\n", "two different labels"),
])
def test_a_bad_import_file_is_one_error_line_and_writes_nothing(batch: Batch, tmp_path: Path,
                                                                content: str,
                                                                message: str) -> None:
    (tmp_path / "labels.csv").write_text(content)
    proc = run_cli([str(batch.dir.parents[1]), "--import", str(tmp_path / "labels.csv")],
                   tmp_path, module="al_sim.label", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not (batch.dir / ANSWERS_FILE).exists()


def test_an_import_file_that_is_not_there_says_check_the_path(batch: Batch,
                                                              tmp_path: Path) -> None:
    with pytest.raises(LabelError, match=r"cannot read .*nowhere.csv \(No such file or "
                                         r"directory\); check the path given to --import$"):
        import_labels(tmp_path / "nowhere.csv", batch, "dr.who")


def test_the_label_command_stays_light() -> None:
    loaded = loaded_after("import al_sim.label.__main__, al_sim.label.importer, "
                          "al_sim.label.export")
    assert not loaded & {"torch", "mlflow", "sklearn"}
