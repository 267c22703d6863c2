"""One batch, several writers: pages, imports and undo never lose each other's answers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from al_sim.label.answers import AnswerBook
from al_sim.label.batch import ANSWERS_FILE, Batch
from al_sim.label.importer import import_labels
from al_sim.label.web import LabelServer, create_app
from al_sim.runtime.errors import LabelError
from tests.conftest import run_cli
from tests.label_helpers import PageServer, small_batch

TOKEN = "tok"


@pytest.fixture()
def batch(tmp_path: Path) -> Batch:
    return small_batch(tmp_path / "run", n=6)


def rows(batch: Batch) -> dict[str, tuple[str, str]]:
    with (batch.dir / ANSWERS_FILE).open(newline="", encoding="utf-8") as f:
        return {r["image"]: (r["label"], r["annotator"]) for r in csv.DictReader(f)}


def page(batch: Batch, who: str):
    return create_app(batch, batch.dir.parents[1], {who: TOKEN}).test_client()


def answer(client, image: str, label: str):
    return client.post("/api/label", json={"image": image, "label": label},
                       headers={"X-Token": TOKEN})


def test_two_pages_on_one_batch_keep_every_answer(batch: Batch) -> None:
    first, second = page(batch, "ann"), page(batch, "bob")
    for k, image in enumerate(batch.images):
        reply = answer(first if k % 2 else second, image, "benign" if k % 3 else "malignant")
        assert reply.status_code == 200, reply.json
    assert reply.json["labelled"] == 6  # each answer sees the other page's answers
    assert rows(batch) == {image: ("benign" if k % 3 else "malignant", "ann" if k % 2 else "bob")
                           for k, image in enumerate(batch.images)}


def test_an_import_while_the_page_is_open_is_kept(batch: Batch, tmp_path: Path) -> None:
    client = page(batch, "dr.page")
    assert answer(client, batch.images[0], "benign").status_code == 200
    (tmp_path / "in.csv").write_text(f"file,label\n{batch.images[1]},malignant\n"
                                     f"{batch.images[2]},benign\n")
    assert import_labels(tmp_path / "in.csv", batch, "lab") == 2
    assert answer(client, batch.images[3], "malignant").json["labelled"] == 4
    assert rows(batch) == {batch.images[0]: ("benign", "dr.page"),
                           batch.images[1]: ("malignant", "lab"),
                           batch.images[2]: ("benign", "lab"),
                           batch.images[3]: ("malignant", "dr.page")}
    described = client.get("/api/batch", headers={"X-Token": TOKEN}).json
    assert described["answered"] == batch.images[:4]  # the page sees the import


def test_an_import_that_changes_answers_says_so(batch: Batch, tmp_path: Path) -> None:
    AnswerBook(batch).set(batch.images[0], "benign", "dr.page")
    (tmp_path / "in.csv").write_text(f"file,label\n{batch.images[0]},malignant\n")
    said: list[str] = []
    import_labels(tmp_path / "in.csv", batch, "lab", warn=said.append)
    assert len(said) == 1 and batch.images[0] in said[0] and "benign" in said[0]


def test_undo_names_its_image_and_refuses_one_without_an_answer(batch: Batch) -> None:
    client = page(batch, "dr.page")
    for image in batch.images[:3]:
        answer(client, image, "benign")

    def undo(body: dict):
        return client.post("/api/undo", json=body, headers={"X-Token": TOKEN})

    reply = undo({"image": batch.images[0]})  # not the latest: still exactly that image
    assert reply.status_code == 200 and reply.json["image"] == batch.images[0]
    assert set(rows(batch)) == set(batch.images[1:3])
    refused = undo({"image": batch.images[0]})
    assert refused.status_code == 409 and "no answer to undo" in refused.json["error"]
    assert set(rows(batch)) == set(batch.images[1:3])
    assert undo({}).json["image"] == batch.images[2]  # no image: the latest, as before


def test_a_second_page_on_the_same_batch_is_refused(batch: Batch) -> None:
    run_dir = batch.dir.parents[1]
    first = LabelServer(batch, run_dir, ["ann"])
    try:
        with pytest.raises(LabelError, match="already open .*pid"):
            LabelServer(batch, run_dir, ["bob"])
    finally:
        first._lock.release()
        first._server.server_close()
        first._socket.close()
    LabelServer(batch, run_dir, ["bob"])._lock.release()  # free again once the first stopped


def test_a_second_label_command_exits_2_with_one_error_line(batch: Batch,
                                                             tmp_path: Path) -> None:
    run_dir = batch.dir.parents[1]
    server = PageServer(run_dir, "--annotator", "ann")
    try:
        second = run_cli([str(run_dir)], tmp_path, module="al_sim.label", timeout=60)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: a labelling page for"), lines
        assert server.call("/api/label", {"image": batch.images[0], "label": "benign"})[0] == 200
    finally:
        server.stop()
