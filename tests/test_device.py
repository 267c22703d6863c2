"""Device paths of the trainer: auto eval batch sizes, on-device conversion, precision, and
(CUDA only, skipped without a GPU) device-resident data and same-seed repeatability."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from al_sim.config.data import PreprocessConf
from al_sim.config.schema import TrainerConf
from al_sim.core.training import Trainer
from al_sim.data.transforms import Preprocess
from al_sim.models.simple_cnn import SimpleCNN
from al_sim.runtime.errors import ConfigError
from tests.conftest import FAST_CLI, run_cli

# These runs check the device path; the run-dir files are the evidence (a GPU box may lack mlflow)
NO_TRACKING = ["tracking.enabled=false"]

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model() -> SimpleCNN:
    torch.manual_seed(0)
    return SimpleCNN(1, 3, widths=[8, 16], hidden=16, dropout=0.3)


def _trainer(device: str = "cpu", **conf) -> Trainer:  # noqa: ANN003
    return Trainer(TrainerConf(epochs=1, min_steps=4, batch_size=32, **conf),
                   Preprocess(PreprocessConf(), channels=1), torch.device(device))


@pytest.mark.parametrize("channels", [1, 3])
def test_normalisation_matches_torchvision_bit_for_bit(channels: int) -> None:
    mean, std = [0.485, 0.456, 0.406][:channels], [0.229, 0.224, 0.225][:channels]
    x = torch.randint(0, 256, (16, channels, 20, 20), dtype=torch.uint8)
    expected = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(mean=mean, std=std)])(x)
    pre = Preprocess(PreprocessConf(mean=mean, std=std), channels)
    assert torch.equal(pre(x), expected)  # CPU results stay what they were
    torch.testing.assert_close(pre(x, fused=True), expected, rtol=0, atol=1e-5)


def test_auto_eval_batch_uses_the_most_specific_table_entry() -> None:
    model, x = _model(), torch.zeros(10, 1, 28, 28, dtype=torch.uint8)
    table = {"cpu": 64, "cpu-SimpleCNN": 128, "cpu-SimpleCNN-28": 512, "cuda": 2048}
    assert _trainer(eval_batch_table=table).eval_batch_size(model, x) == 512
    assert _trainer(eval_batch_table=table).eval_batch_size(model, x[..., :20, :20]) == 128
    assert _trainer(eval_batch_table={"cpu": 32}).eval_batch_size(model, x) == 32
    assert _trainer(eval_batch_size=7, eval_batch_table=table).eval_batch_size(model, x) == 7
    with pytest.raises(ConfigError, match=r"no entry for cpu .* trainer\.eval_batch_table\.cpu="):
        _trainer(eval_batch_table={"cuda": 32}).eval_batch_size(model, x)  # no code fallback


def test_volumes_take_their_own_table_entries_before_the_2d_ones() -> None:
    model = SimpleCNN(1, 2, widths=[4], hidden=8, dropout=0.0, spatial_dims=3)
    v = torch.zeros(10, 1, 28, 28, 28, dtype=torch.uint8)
    table = {"cpu": 64, "cpu-SimpleCNN-28": 512, "cpu-3d": 8}

    def batch(x: torch.Tensor, table: dict[str, int]) -> int:
        return _trainer(eval_batch_table=table, inference_memory_mb=None).eval_batch_size(model, x)

    assert batch(v, table) == 8
    assert batch(v, {**table, "cpu-SimpleCNN-3d": 16}) == 16
    assert batch(v, {**table, "cpu-SimpleCNN-3d": 16, "cpu-SimpleCNN-28^3": 4}) == 4
    assert batch(v, {"cpu": 32}) == 32
    assert batch(torch.zeros(10, 1, 28, 28, dtype=torch.uint8), table) == 512  # 2D unchanged


def test_predictions_do_not_depend_on_the_eval_batch_size() -> None:
    model, x = _model(), torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    auto = _trainer(eval_batch_table={"cpu": 1000}).predict_proba(model, x)
    assert auto.shape == (300, 3)
    small = _trainer(eval_batch_size=7).predict_proba(model, x)
    torch.testing.assert_close(torch.from_numpy(auto), torch.from_numpy(small))


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(ConfigError, match="trainer.precision=fp16"):
        _trainer(precision="fp16")


def test_bf16_fits_and_predicts_on_cpu() -> None:
    model, x = _model(), torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    trainer = _trainer(precision="bf16")
    report = trainer.fit(model, x, (torch.arange(64) % 3).numpy(), 3, seed=0)
    assert report.steps > 0 and report.train_loss > 0
    probs = trainer.predict_proba(model, x)
    torch.testing.assert_close(torch.from_numpy(probs).sum(1), torch.ones(64))


def test_cpu_data_stay_where_they_are() -> None:
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    assert _trainer().place(x) is x


# ----------------------------------------------------------------------------- CUDA only
@cuda
def test_pool_is_resident_when_it_fits_and_streams_otherwise() -> None:
    x = torch.randint(0, 256, (500, 1, 28, 28), dtype=torch.uint8)
    resident = _trainer("cuda")
    placed = resident.place(x)
    assert placed.device.type == "cuda"
    streamed = _trainer("cuda", resident_memory_fraction=1e-12)
    assert streamed.place(x).device.type == "cpu"
    model = _model()
    a = resident.predict_proba(model, placed)
    b = streamed.predict_proba(model, x)
    assert (a == b).all()  # same batches, same kernels: where the data live changes nothing


@cuda
def test_mc_dropout_is_seeded_on_cuda() -> None:
    trainer, model = _trainer("cuda"), _model()
    x = trainer.place(torch.randint(0, 256, (200, 1, 28, 28), dtype=torch.uint8))
    a = trainer.mc_proba(model, x, samples=5, seed=1)
    assert (a == trainer.mc_proba(model, x, samples=5, seed=1)).all()
    assert not (a == trainer.mc_proba(model, x, samples=5, seed=2)).all()


def _results(run_dir: Path) -> tuple[bytes, list[list[str]]]:
    rows = list(csv.reader((run_dir / "metrics.csv").open()))
    keep = [i for i, h in enumerate(rows[0]) if not h.startswith("time/")]
    return (run_dir / "queries.csv").read_bytes(), [[r[i] for i in keep] for r in rows]


@cuda
@pytest.mark.parametrize("strategy", ["bald"])  # training, eval and MC dropout
def test_same_seed_twice_on_cuda_gives_identical_results(strategy: str, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        proc = run_cli(["trainer.device=cuda", "budget=tiny", "seed=5", f"strategy={strategy}",
                        f"hydra.run.dir={tmp_path / name}", *FAST_CLI, *NO_TRACKING], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(_results(tmp_path / name))
    assert runs[0] == runs[1]


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_complete_on_cuda(precision: str, tmp_path: Path) -> None:
    proc = run_cli(["trainer.device=cuda", f"trainer.precision={precision}", "budget=tiny",
                    f"hydra.run.dir={tmp_path / 'run'}", *FAST_CLI, *NO_TRACKING], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _queries, metrics = _results(tmp_path / "run")
    assert len(metrics) > 2
