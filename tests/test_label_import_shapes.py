"""Import files of unexpected shapes, disagreeing annotators, and names two images share."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from al_sim.label.batch import ANSWERS_FILE, LS_TASKS_FILE, Batch, Item, batch_dir, write_batch
from al_sim.label.human_oracle import view_png
from al_sim.label.importer import import_labels
from al_sim.runtime.errors import LabelError
from tests.conftest import run_cli
from tests.label_helpers import CLASSES, small_batch
from tests.test_label_files import label_studio_export


@pytest.fixture()
def batch(tmp_path: Path) -> Batch:
    return small_batch(tmp_path / "run", n=4)


def answers(batch: Batch) -> dict[str, dict[str, str]]:
    path = batch.dir / ANSWERS_FILE
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {r["image"]: r for r in csv.DictReader(f)}


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def task(batch: Batch, k: int = 0, **changes: object) -> dict:
    base = label_studio_export(batch, {k: "benign"})[k]
    base.update(changes)
    return base


@pytest.mark.parametrize(("shape", "message"), [
    (lambda b: [task(b, annotations=None)], "task 1 `annotations` is null"),
    (lambda b: [task(b, data=["x.png"])], "task 1 `data` is a list"),
    (lambda b: [task(b, data={"image": {"deep": {"er": [1]}}})], "task 1 `image` is an object"),
    (lambda b: [task(b), task(b, 1, annotations=[{"result": None}])],
     "task 2 annotation 1's `result` is null"),
    (lambda b: [task(b, annotations=[{"result": [{"type": "choices",
                                                  "value": {"choices": [["benign"]]}}]}])],
     "task 1 annotation 1's choice is"),
    (lambda b: [task(b, annotations=[{"result": [{"type": "choices", "value": "benign"}]}])],
     "task 1 annotation 1's choice `value` is a str"),
    (lambda b: [task(b, annotations=["benign"])], "task 1 annotation 1 is a str"),
    (lambda b: ["[" * 100_000 + "]" * 100_000][0], "nested too deeply"),
    (lambda b: {"tasks": []}, "a JSON list of tasks, this is an object"),
    (lambda b: [task(b, data={"pool_index": "three"})], "task 1 `pool_index` is 'three'"),
])
def test_a_label_studio_export_of_another_shape_is_one_clear_refusal(batch: Batch,
                                                                     tmp_path: Path, shape,
                                                                     message: str) -> None:
    path = write(tmp_path / "export.json", shape(batch))
    with pytest.raises(LabelError) as refused:
        import_labels(path, batch, "me")
    assert message in str(refused.value) and "export.json" in str(refused.value)
    assert answers(batch) == {}


@pytest.mark.parametrize(("name", "content", "message"), [
    ("big.csv", 'file,label\n"' + "x" * 200_000 + '",benign\n', "line 2 is not readable CSV"),
    ("head.csv", '"' + "x" * 200_000 + '",label\n', "line 1 is not readable CSV"),
    ("null.json", "null", "a JSON list of tasks, this is null"),
    ("latin.csv", "file,label\n0000000.png,b\xe9nign\n".encode("latin-1"), "save it as UTF-8"),
])
def test_a_broken_file_is_one_clear_refusal(batch: Batch, tmp_path: Path, name: str,
                                            content: str | bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LabelError, match=message):
        import_labels(path, batch, "me")


def test_the_cli_answers_a_deeply_nested_file_with_one_error_line(batch: Batch,
                                                                  tmp_path: Path) -> None:
    path = write(tmp_path / "deep.json", "[" * 100_000 + "]" * 100_000)
    proc = run_cli([str(batch.dir.parents[1]), "--import", str(path)], tmp_path,
                   module="al_sim.label", timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "deep.json" in lines[0]


def test_disagreeing_annotations_are_reported_and_both_kept(batch: Batch,
                                                            tmp_path: Path) -> None:
    export = label_studio_export(batch, {0: "benign", 1: "benign"})
    second = json.loads(json.dumps(export[0]["annotations"][0]))
    second["completed_by"] = {"email": "other@example.org"}
    second["result"][0]["value"]["choices"] = ["malignant"]
    export[0]["annotations"].append(second)
    said: list[str] = []
    assert import_labels(write(tmp_path / "two.json", export), batch, "me", warn=said.append) == 2
    assert len(said) == 1 and "task 1" in said[0] and "disagree" in said[0]
    row = answers(batch)[batch.images[0]]
    assert (row["label"], row["annotator"]) == ("malignant", "other@example.org")
    assert row["other_answers"] == "benign by rad@example.org"
    assert answers(batch)[batch.images[1]]["other_answers"] == ""


def test_a_byte_order_mark_in_an_import_csv_is_fine(batch: Batch, tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(f"\ufefffile,label\r\n{batch.images[0]},benign\r\n".encode())
    assert import_labels(path, batch, "me") == 1


@pytest.fixture()
def clashing(tmp_path: Path) -> Batch:
    """Pool files named like the batch's own image names, each naming another image."""
    items = [Item(f"{i:07d}.png", i, f"unlabeled_pool_images/{(i + 1) % 3:07d}.png", "", None)
             for i in range(3)]
    rng = np.random.default_rng(0)
    pngs = [view_png(rng.integers(0, 255, (1, 8, 8), dtype=np.uint8), 8) for _ in items]
    return write_batch(batch_dir(tmp_path / "run", 1), 1, CLASSES, items, pngs)


def test_our_label_studio_tasks_come_back_on_their_own_images(clashing: Batch,
                                                              tmp_path: Path) -> None:
    choices = {0: "malignant", 1: "benign", 2: "benign"}
    path = write(tmp_path / "ls.json", label_studio_export(clashing, choices))
    import_labels(path, clashing, "me")
    assert {image: r["label"] for image, r in answers(clashing).items()} == {
        clashing.images[k]: label for k, label in choices.items()}
    # Without pool_index, our task's URL (labels/round_01/images/<name>) still says which.
    export = label_studio_export(clashing, {0: "benign"})
    for t in export:
        del t["data"]["pool_index"], t["data"]["file"]
    import_labels(write(tmp_path / "url.json", export), clashing, "me")
    assert answers(clashing)[clashing.images[0]]["label"] == "benign"


def test_a_name_two_batch_images_share_is_refused(clashing: Batch, tmp_path: Path) -> None:
    (tmp_path / "plain.csv").write_text("file,label\n0000001.png,malignant\n")
    with pytest.raises(LabelError, match="could be any of the batch images 0000000.png, "
                                         "0000001.png"):
        import_labels(tmp_path / "plain.csv", clashing, "me")
    (tmp_path / "ids.csv").write_text("file,label\nunlabeled_pool_images/0000001.png,malignant\n")
    import_labels(tmp_path / "ids.csv", clashing, "me")  # the dataset's id: pool index 0
    assert {i: r["label"] for i, r in answers(clashing).items()} == {"0000000.png": "malignant"}


def test_an_export_of_another_round_is_refused(batch: Batch, tmp_path: Path) -> None:
    tasks = json.loads((batch.dir / LS_TASKS_FILE).read_text())
    (tmp_path / "old.csv").write_text(f"file,label,round\n{tasks[0]['data']['file']},benign,0\n")
    with pytest.raises(LabelError, match="line 2 is from round 0, but the batch waiting is "
                                         "round 1"):
        import_labels(tmp_path / "old.csv", batch, "me")


def test_an_export_gives_each_image_its_own_file_name() -> None:
    from al_sim.label.export import _unique

    used: set[str] = set()
    assert [_unique("001.png", "0", used) for _ in range(3)] == [
        "001.png", "r0_001.png", "r0_2_001.png"]
