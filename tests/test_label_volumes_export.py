"""``python -m al_sim.label RUN --export DIR`` for volumes: read back by dataset.volumes=true."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

pytest.importorskip("nibabel")
pytest.importorskip("pydicom")

from al_sim.data import folder_volumes  # noqa: E402
from al_sim.data.folder import load_folder  # noqa: E402
from al_sim.data.nifti import read_nifti  # noqa: E402
from al_sim.label.__main__ import main as label_main  # noqa: E402
from al_sim.label.batch import Answer, batch_dir, now  # noqa: E402
from al_sim.label.human_oracle import HumanOracle  # noqa: E402
from al_sim.label.volumes import read_volume, volume_path  # noqa: E402
from tests.test_folder_volumes import volume_folder  # noqa: E402


def labelled_run(run_dir: Path, data: dict[str, Any], root: Path | None,
                 answer: dict[int, str]) -> None:
    """A run dir as oracle=human leaves it: config, the given labels, an answered batch."""
    run_dir.mkdir(parents=True)
    node = {"_target_": "al_sim.data.folder.load_folder", "root": str(root), "volumes": True} \
        if root is not None else {"_target_": "al_sim.data.synthetic.load_synthetic"}
    OmegaConf.save({"dataset": node}, run_dir / "config.yaml")
    given = data["initial_labeled"] if root is not None else []  # no files: not exportable
    with (run_dir / "labeled_set.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("pool_index", "id", "label", "class_name", "round"))
        for i in given:
            y = int(data["pool_y"][i])
            writer.writerow((i, data["pool_ids"][i], y, data["class_names"][y], 0))
    dataset = SimpleNamespace(multilabel=False, **{k: data[k] for k in (
        "pool_x", "pool_y", "class_names", "initial_labeled", "pool_ids")})
    oracle = HumanOracle(run_dir, dataset, 32, root)  # type: ignore[arg-type]
    batch = oracle._write(batch_dir(run_dir, 1), np.array(list(answer)), 1, None)
    batch.write_answers({item.image: Answer(answer[item.pool_index], "dr.ct", now())
                         for item in batch.items})


def test_export_round_trips_through_the_volume_folder(tmp_path, monkeypatch) -> None:
    captured: dict[str, Any] = {}  # what the ALDataset is built from (any ALDataset version)
    monkeypatch.setattr(folder_volumes, "ALDataset", lambda **kw: captured.update(kw) or kw)
    data_root = volume_folder(tmp_path / "data")
    load_folder(root=str(data_root), image_size=8, volumes=True)
    data = dict(captured)  # 4 given, then case2, case3 (series), p0.nii, p1.nii
    labelled_run(tmp_path / "run", data, data_root, {4: "normal", 6: "lesion"})
    out = tmp_path / "export"
    assert label_main([str(tmp_path / "run"), "--export", str(out)]) == 0
    assert (out / "initial_labeled_images" / "normal" / "case2").is_dir()  # a series: as is
    assert (out / "initial_labeled_images" / "lesion" / "p0.nii").is_file()
    assert sorted(p.name for p in (out / "unlabeled_pool_images").iterdir()) == [
        "case3", "p1.nii"]
    captured.clear()
    load_folder(root=str(out), image_size=8, volumes=True, labels_required=False)
    assert captured["class_names"] == ["lesion", "normal"]
    back = dict(zip(captured["pool_ids"], captured["pool_y"].tolist(), strict=True))
    assert back["initial_labeled_images/normal/case2"] == 1
    assert back["initial_labeled_images/lesion/p0.nii"] == 0
    assert back["unlabeled_pool_images/case3"] == -1 and len(back) == 8
    assert tuple(captured["test_x"].shape) == (4, 1, 8, 8, 8)


def test_a_volume_known_only_from_its_batch_is_exported_as_nifti(tmp_path) -> None:
    import torch

    pool = torch.from_numpy(np.random.default_rng(1).random((3, 1, 6, 6, 6), np.float32))
    data = {"pool_x": pool, "pool_y": np.array([0, -1, -1]), "class_names": ["a", "b"],
            "initial_labeled": np.array([0]), "pool_ids": None}
    labelled_run(tmp_path / "run", data, None, {2: "b"})
    out = tmp_path / "export"
    assert label_main([str(tmp_path / "run"), "--export", str(out)]) == 0
    written = out / "initial_labeled_images" / "b" / "2.nii.gz"
    np.testing.assert_allclose(read_nifti(written, 10**6), pool[2, 0].numpy())
    assert np.array_equal(read_volume(volume_path(batch_dir(tmp_path / "run", 1),
                                                  "0000002.png")), pool[2, 0].numpy())
