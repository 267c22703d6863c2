"""Volumes (CT/MRI, ``N x C x D x H x W``) end to end: data, transforms, models, strategies,
inference memory, MedMNIST 3D archives and the CLI (issue 23)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from al_sim.app.components import build_strategy, check_input_size
from al_sim.config.data import PreprocessConf, SyntheticVolumeDatasetConf
from al_sim.config.schema import BudgetConf, TrainerConf
from al_sim.core.footprint import activation_bytes, inference_bytes
from al_sim.core.loop import run_active_learning
from al_sim.core.oracle import Oracle
from al_sim.core.training import Trainer
from al_sim.data import medmnist as mm
from al_sim.data.synthetic_volume import generate_volumes, load_synthetic_volume
from al_sim.data.transforms import Preprocess
from al_sim.models.resnet3d import ResNet18_3D
from al_sim.models.simple_cnn import SimpleCNN
from al_sim.runtime.errors import ConfigError, DataError
from al_sim.sinks.run_plots import mid_slices
from al_sim.strategies.initial import pixel_embedding
from tests.conftest import FAST_CLI, assert_refused, compose_config, run_cli

SINGLE_LABEL = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "strategy").glob(
    "*.yaml") if p.stem != "cvirs")


@pytest.fixture(scope="module")
def volumes():
    return load_synthetic_volume(n_pool=60, n_test=30, image_size=16, seed=3)


def cnn3d(n_classes: int = 2, seed: int = 0) -> SimpleCNN:
    torch.manual_seed(seed)
    return SimpleCNN(1, n_classes, widths=[4, 8], hidden=16, dropout=0.3, spatial_dims=3)


def trainer(**conf: object) -> Trainer:
    settings = {"epochs": 1, "min_steps": 4, "batch_size": 16, "eval_batch_size": 64, **conf}
    return Trainer(TrainerConf(**settings),  # type: ignore[arg-type]
                   Preprocess(PreprocessConf(), channels=1, spatial_rank=3),
                   torch.device("cpu"))


# ------------------------------------------------------------------------------ data
def test_synthetic_volumes_are_deterministic_rare_and_5d(volumes) -> None:
    assert volumes.pool_x.shape == (60, 1, 16, 16, 16) and volumes.pool_x.dtype == torch.uint8
    assert volumes.spatial_rank == 3 and volumes.volumes and volumes.image_shape == (1, 16, 16, 16)
    assert volumes.class_names == ["normal", "nodule"]
    assert np.bincount(volumes.pool_y).tolist() == [54, 6]  # the nodule is the rare class
    again, labels = generate_volumes(20, 16, [0.9, 0.1], 0.6, seed=5)
    same, same_labels = generate_volumes(20, 16, [0.9, 0.1], 0.6, seed=5)
    other, _ = generate_volumes(20, 16, [0.9, 0.1], 0.6, seed=6)
    assert np.array_equal(again, same) and np.array_equal(labels, same_labels)
    assert not np.array_equal(again, other)


def test_a_nodule_is_brighter_at_its_centre_than_the_tissue_around() -> None:
    x, y = generate_volumes(200, 24, [0.5, 0.5], 0.0, seed=1)
    core = x[:, 0, 8:16, 8:16, 8:16].reshape(200, -1).mean(1)
    assert core[y == 1].mean() > core[y == 0].mean() + 10  # grey levels of 255


def test_volume_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="2 positive numbers"):
        SyntheticVolumeDatasetConf(class_proportions=[0.8, 0.1, 0.1])
    with pytest.raises(ConfigError, match="image_size must be >= 16"):
        SyntheticVolumeDatasetConf(image_size=8)


# ------------------------------------------------------------------------------ transforms
def test_normalisation_is_per_channel_over_every_voxel() -> None:
    pre = Preprocess(PreprocessConf(mean=[0.2, 0.6], std=[0.5, 0.25]), channels=2,
                     spatial_rank=3)
    x = torch.randint(0, 256, (3, 2, 4, 5, 6), dtype=torch.uint8)
    want = (x.float() / 255 - torch.tensor([0.2, 0.6]).view(2, 1, 1, 1)) / torch.tensor(
        [0.5, 0.25]).view(2, 1, 1, 1)
    torch.testing.assert_close(pre(x), want)
    with pytest.raises(ConfigError, match="built for 3D"):
        pre(x[:, :, 0])


def test_volume_flips_are_exact_and_drawn_per_volume() -> None:
    pre = Preprocess(PreprocessConf(dflip=True), channels=1, spatial_rank=3)
    x = torch.randint(0, 256, (16, 1, 6, 7, 8), dtype=torch.uint8)
    out = pre(x, train=True, generator=torch.Generator().manual_seed(0))
    plain = pre(x)
    flipped = [torch.allclose(o, p.flip(1), atol=1e-5) for o, p in zip(out, plain, strict=True)]
    kept = [torch.allclose(o, p, atol=1e-5) for o, p in zip(out, plain, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))  # a flip, nothing else
    assert any(flipped) and any(kept)


def test_a_slice_axis_flip_on_2d_images_is_refused() -> None:
    with pytest.raises(ConfigError, match="dflip=false"):
        Preprocess(PreprocessConf(dflip=True), channels=1)


# ------------------------------------------------------------------------------ models
@pytest.mark.parametrize("side", [16, 28])
def test_3d_models_give_logits_and_embeddings(side: int) -> None:
    x = torch.zeros(2, 1, side, side, side)
    for model in (cnn3d(3), ResNet18_3D(1, 3, dropout=0.3, small_input_stem="auto",
                                        small_stem_max_size=64, pretrained=False,
                                        input_size=side)):
        model.eval()
        assert model.spatial_rank == 3
        assert model(x).shape == (2, 3) and model.features(x).shape == (2, model.embedding_dim)


def test_resnet18_3d_picks_its_stem_by_size() -> None:
    def stem(size: int) -> tuple[int, ...]:
        return ResNet18_3D(1, 2, dropout=0.3, small_input_stem="auto", small_stem_max_size=64,
                           pretrained=False, input_size=size).trunk[0][0].stride

    assert stem(28) == (1, 1, 1) and stem(128) == (1, 2, 2)


def test_pretrained_3d_weights_are_never_downloaded(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="r3d_18-b3b3357e.pth.*never downloads"):
        ResNet18_3D(1, 2, dropout=0.3, small_input_stem=True, small_stem_max_size=64,
                    pretrained=True)


def test_a_2d_model_on_volumes_is_refused_with_the_3d_models_named(volumes) -> None:
    def flat(seed: int) -> SimpleCNN:
        return SimpleCNN(1, 2, widths=[4], hidden=8, dropout=0.3)

    with pytest.raises(ConfigError, match="takes 2D images.*holds volumes.*model=cnn3d"):
        check_input_size(flat, volumes, "simple_cnn")


# ------------------------------------------------------------------------------ strategies
@pytest.mark.parametrize("name", SINGLE_LABEL)
def test_every_strategy_queries_volumes_in_the_real_loop(name: str, volumes) -> None:
    strategy = build_strategy(compose_config([f"strategy={name}", "strategy.mc_samples=3"]
                                             if "bald" in name else [f"strategy={name}"]))
    budget = BudgetConf(initial=10, query_size=5, rounds=1,
                        initial_selection="typiclust" if name == "typiclust" else "stratified")
    result = run_active_learning(volumes, lambda seed: cnn3d(2, seed), strategy,
                                 Oracle(volumes.pool_y, 2), trainer(), budget, seed=0)
    assert [r.n_labeled for r in result.rounds] == [10, 15]
    picked = np.concatenate([q.indices for q in result.queries])
    assert len(np.unique(picked)) == 15 and picked.max() < volumes.n_pool


def test_the_cold_start_embedding_pools_volumes_to_8_cubed(volumes) -> None:
    emb = pixel_embedding(volumes.pool_x)
    assert emb.shape == (60, 32) and np.isfinite(emb).all()


# ------------------------------------------------------------------------------ memory
def test_inference_batches_fit_the_memory_budget_and_give_the_same_scores(volumes) -> None:
    model = cnn3d().eval()
    capped, free = trainer(inference_memory_mb=4), trainer(inference_memory_mb=None)
    probe = capped.preprocess(volumes.pool_x[:1])
    one = inference_bytes(model, probe)
    # the peak of live tensors, not the sum of every activation of the pass
    assert 2 * 4 * 16**3 * 4 < one < activation_bytes(model, probe) / 2
    size = capped.eval_batch_size(model, volumes.pool_x)
    assert size == int(4 * 2**20 // one) and 1 < size < 64  # the measured cap, not 64
    assert free.eval_batch_size(model, volumes.pool_x) == 64
    np.testing.assert_allclose(capped.predict_proba(model, volumes.pool_x),
                               free.predict_proba(model, volumes.pool_x), atol=1e-5)


# ------------------------------------------------------------------------------ MedMNIST 3D
def write_3d_archive(folder: Path, name: str, size: int, n_classes: int) -> Path:
    """An archive with the official keys, shapes (``N x D x H x W`` uint8) and dtypes."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 30, "val": 6, "test": 12}.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % n_classes).astype(np.uint8)[:, None]
    path = folder / mm.file_name(name, size)
    np.savez(path, **arrays)  # uncompressed, as the official files: members map in place
    return path


@pytest.mark.parametrize("size", [28, 64])
def test_medmnist_3d_archives_load_as_volumes_mapped_when_large(tmp_path, size: int) -> None:
    write_3d_archive(tmp_path, "organmnist3d", size, 11)
    ds = mm.load_medmnist(name="organmnist3d", size=size, root=str(tmp_path),
                          in_memory_max_mb=0 if size == 64 else None)
    assert ds.pool_x.shape == (30, 1, size, size, size) and ds.volumes
    assert ds.memory_mapped == (size == 64) and ds.n_classes == 11
    assert ds.class_names[0] == "liver" and ds.val_x is not None and len(ds.val_y) == 6


def test_a_3d_archive_of_the_wrong_shape_and_size_is_named(tmp_path) -> None:
    write_3d_archive(tmp_path, "nodulemnist3d", 28, 2)
    with pytest.raises(DataError, match="nodulemnist3d_64.npz.*not found"):
        mm.load_medmnist(name="nodulemnist3d", size=64, root=str(tmp_path))
    with pytest.raises(ConfigError, match="28 or 64 for the 3D dataset"):
        mm.load_medmnist(name="nodulemnist3d", size=128, root=str(tmp_path))
    flat = tmp_path / "flat"
    flat.mkdir()
    np.savez(flat / mm.file_name("nodulemnist3d", 28),
             **{f"{s}_{k}": (np.zeros((4, 28, 28), np.uint8) if k == "images"
                             else np.zeros((4, 1), np.uint8))
                for s in ("train", "val", "test") for k in ("images", "labels")})
    with pytest.raises(DataError, match="N x 28 x 28 x 28"):
        mm.load_medmnist(name="nodulemnist3d", root=str(flat))


# ------------------------------------------------------------------------------ run dir
def test_a_volume_tile_shows_its_three_mid_slices() -> None:
    vol = np.zeros((1, 4, 6, 8), dtype=np.uint8)
    vol[0, 2] = 10  # the axial mid slice
    tiles = mid_slices(vol)
    assert tiles.shape == (1, 8, 24)
    assert (tiles[0, 1:7, 0:8] == 10).all()  # axial slice (6 x 8) centred in its 8 x 8 tile


# ------------------------------------------------------------------------------ the CLI
@pytest.mark.slow
def test_a_run_on_volumes_logs_the_contract_and_a_2d_model_is_one_error_line(tmp_path) -> None:
    args = ["dataset=synthetic_volume", "dataset.image_size=16", "budget=tiny",
            *FAST_CLI, f"hydra.run.dir={tmp_path / 'run'}"]
    ok = run_cli(args, tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    with (tmp_path / "run" / "queries.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 40  # 20 initial + 2 rounds of 10
    with (tmp_path / "run" / "metrics.csv").open() as f:
        assert [r["n_labeled"] for r in csv.DictReader(f)] == ["20", "30", "40"]
    assert list((tmp_path / "run" / "queries").glob("*.png"))
    (tmp_path / "bad").mkdir()
    bad = run_cli([*args[:-1], "model=simple_cnn", f"hydra.run.dir={tmp_path / 'bad' / 'run'}"],
                  tmp_path / "bad")
    assert_refused(bad, tmp_path / "bad", ["simple_cnn", "volumes", "model=cnn3d"])


@pytest.mark.slow
def test_a_run_on_an_organmnist3d_archive_queries_its_pool(tmp_path) -> None:
    write_3d_archive(tmp_path, "organmnist3d", 28, 11)
    done = run_cli(["dataset=medmnist3d", f"dataset.root={tmp_path}", "budget.initial=11",
                    "budget.query_size=5", "budget.rounds=1", "model.widths=[4]",
                    "model.hidden=8", "trainer.epochs=1", "trainer.min_steps=2",
                    "trainer.batch_size=8", "tracking.enabled=false", "progress=false",
                    f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    with (tmp_path / "run" / "queries.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and max(int(r["pool_index"]) for r in rows) < 30
    assert "cnn3d" in (tmp_path / "run" / "config.yaml").read_text()
