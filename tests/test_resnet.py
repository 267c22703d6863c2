"""ResNet-18: shapes for 1/3 channels at 28-224 px, the stem per input size, dropout only in
the head (ImageNet weights: tests/test_pretrained.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from al_sim.app.components import build_model
from al_sim.config.data import PreprocessConf
from al_sim.config.schema import TrainerConf
from al_sim.core.training import Trainer
from al_sim.data.transforms import Preprocess
from al_sim.models.base import ALModel, DropoutHead
from al_sim.models.resnet import ResNet18
from al_sim.runtime.errors import ConfigError
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


KNOBS = {"dropout": 0.3, "small_input_stem": True, "small_stem_max_size": 64,
         "pretrained": False}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 64, 128, 224])
def test_features_and_logits_shapes(channels: int, size: int) -> None:
    knobs = dict(KNOBS, small_input_stem="auto")
    model = ResNet18(in_channels=channels, n_classes=4, input_size=size, **knobs).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        z = model.features(x)
        logits = model(x)
    assert isinstance(model, ALModel) and model.embedding_dim == 512 and model.n_classes == 4
    assert z.shape == (2, 512) and logits.shape == (2, 4)
    assert torch.allclose(model.head(z), logits)
    assert model.small_input_stem == (size <= 64)


def test_small_input_stem_keeps_resolution_and_imagenet_stem_is_optional() -> None:
    small = ResNet18(1, 2, **KNOBS)
    assert small.trunk[0].kernel_size == (3, 3) and small.trunk[0].stride == (1, 1)
    assert small.trunk[0].in_channels == 1 and isinstance(small.trunk[3], nn.Identity)
    big = ResNet18(1, 2, **dict(KNOBS, small_input_stem=False))
    assert big.trunk[0].kernel_size == (7, 7) and big.trunk[0].stride == (2, 2)
    assert big.trunk[0].in_channels == 1 and isinstance(big.trunk[3], nn.MaxPool2d)
    assert ResNet18(3, 2, **dict(KNOBS, small_input_stem=False)).trunk[0].in_channels == 3
    x = torch.randn(1, 1, 28, 28)
    layer4_small = small.trunk[:-2](x)  # before pooling
    assert layer4_small.shape[-2:] == (4, 4)


def test_the_head_holds_the_only_dropout() -> None:
    model = ResNet18(3, 5, **dict(KNOBS, dropout=0.5))
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 1 and dropouts[0] is model.classifier.dropout
    assert isinstance(model.classifier, DropoutHead) and dropouts[0].p == 0.5
    model.eval()
    z = model.features(torch.randn(3, 3, 28, 28)).detach()
    model.classifier.train()
    draws = torch.stack([model.head(z) for _ in range(5)])
    assert not torch.allclose(draws[0], draws[1])  # MC dropout varies only in the head


@pytest.mark.parametrize(("size", "small"), [(None, True), (28, True), (64, True),
                                             (65, False), (128, False), (224, False)])
def test_auto_stem_is_small_up_to_the_threshold_and_imagenet_above(size, small) -> None:
    model = ResNet18(1, 2, input_size=size, **dict(KNOBS, small_input_stem="auto"))
    assert model.small_input_stem is small
    assert model.trunk[0].kernel_size == ((3, 3) if small else (7, 7))
    assert isinstance(model.trunk[3], nn.Identity if small else nn.MaxPool2d)
    # an explicit choice wins over the size; the threshold is a knob
    assert ResNet18(1, 2, input_size=224, **KNOBS).small_input_stem is True
    assert ResNet18(1, 2, input_size=128, **dict(KNOBS, small_input_stem="auto",
                                                 small_stem_max_size=128)).small_input_stem


def test_imagenet_stem_at_224_px_ends_on_7x7_maps() -> None:
    model = ResNet18(3, 2, input_size=224, **dict(KNOBS, small_input_stem="auto")).eval()
    with torch.no_grad():
        maps = model.trunk[:-2](torch.randn(1, 3, 224, 224))
    assert maps.shape[-2:] == (7, 7)


def test_bad_stem_choice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="small_input_stem must be auto, true or false"):
        ResNet18(1, 2, **dict(KNOBS, small_input_stem="big"))


def test_built_from_config_with_seeded_weights() -> None:
    cfg = OmegaConf.load(REPO / "conf" / "model" / "resnet18.yaml")
    a = build_model(cfg, in_channels=1, n_classes=3, seed=7)
    b = build_model(cfg, in_channels=1, n_classes=3, seed=7)
    c = build_model(cfg, in_channels=1, n_classes=3, seed=8)
    assert isinstance(a, ResNet18)
    assert torch.equal(a.trunk[0].weight, b.trunk[0].weight)
    assert not torch.equal(a.trunk[0].weight, c.trunk[0].weight)
    with pytest.raises(ConfigError, match="model.dropout"):
        ResNet18(1, 2, **dict(KNOBS, dropout=1.0))
    assert a.small_input_stem  # no input size given: auto = the small stem
    big = build_model(cfg, in_channels=1, n_classes=3, seed=7, input_size=224)
    assert not big.small_input_stem and big.trunk[0].kernel_size == (7, 7)


def test_models_without_an_input_size_argument_never_receive_it() -> None:
    cfg = OmegaConf.load(REPO / "conf" / "model" / "simple_cnn.yaml")
    model = build_model(cfg, in_channels=1, n_classes=3, seed=0, input_size=224)
    assert model(torch.randn(2, 1, 224, 224)).shape == (2, 3)


def test_trains_and_predicts_with_the_trainer() -> None:
    conf = TrainerConf(epochs=1, min_steps=2, batch_size=8, eval_batch_size=16)
    trainer = Trainer(conf, Preprocess(PreprocessConf(), channels=3), torch.device("cpu"))
    model = ResNet18(3, 2, **KNOBS)
    x = torch.randint(0, 256, (16, 3, 28, 28), dtype=torch.uint8)
    y = np.arange(16) % 2
    report = trainer.fit(model, x, y, n_classes=2, seed=0)
    assert report.steps == 2 and np.isfinite(report.train_loss)
    probs = trainer.predict_proba(model, x[:5])
    assert probs.shape == (5, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert trainer.mc_proba(model, x[:5], samples=3, seed=0).shape == (5, 3, 2)
    assert trainer.embed(model, x[:5]).shape == (5, 512)
