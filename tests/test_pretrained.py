"""ImageNet weights for ResNet-18: read from a local torch cache only, never downloaded.

The cache is a temp dir (``TORCH_HOME``) holding a state dict saved from a
randomly initialised torchvision ResNet-18, so nothing is fetched. Every test
runs with sockets blocked and torchvision's / torch.hub's download functions
replaced where they are looked up, so an attempted download fails the test.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torchvision.models._api as tv_api
from omegaconf import OmegaConf
from torchvision.models import resnet18

from al_sim.app.components import build_model
from al_sim.models import pretrained as pre
from al_sim.models.resnet import ResNet18
from al_sim.runtime.errors import ConfigError
from tests.conftest import FAST_CLI, REPO, run_cli

KNOBS = {"dropout": 0.3, "small_input_stem": "auto", "small_stem_max_size": 64,
         "pretrained": True}
URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


class NetworkUsedError(AssertionError):
    """Raised by every blocked network entry point."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail on any connection or any call of the functions torchvision downloads with."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise NetworkUsedError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # WeightsEnum.get_state_dict calls the name bound in torchvision.models._api
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    torch.set_num_threads(1)
    pre._load.cache_clear()


def test_the_network_block_is_real() -> None:
    with pytest.raises(NetworkUsedError):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(NetworkUsedError):
        resnet18(weights="IMAGENET1K_V1")  # what a download attempt would go through


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """A torch cache in ``tmp_path`` holding a random ResNet-18 as the ImageNet weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(123)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    assert pre.weights_path() == path
    return state


def test_missing_weights_name_the_exact_file_and_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ConfigError) as info:
        ResNet18(1, 2, **KNOBS)
    msg = str(info.value)
    assert str(expected) in msg and URL in msg and "model.pretrained=false" in msg


@pytest.mark.parametrize("size", [28, 224])
def test_rgb_weights_match_the_cache(cache: dict, size: int) -> None:
    model = ResNet18(3, 4, input_size=size, **KNOBS)
    net_keys = dict(zip(["conv1", "bn1"], model.trunk[:2], strict=True))
    assert torch.equal(net_keys["bn1"].weight, cache["bn1.weight"])
    assert torch.equal(net_keys["bn1"].running_var, cache["bn1.running_var"])
    assert torch.equal(model.trunk[4][0].conv1.weight, cache["layer1.0.conv1.weight"])
    assert torch.equal(model.trunk[7][1].bn2.bias, cache["layer4.1.bn2.bias"])
    if size == 224:  # ImageNet stem: the RGB filters as they are
        assert torch.equal(net_keys["conv1"].weight, cache["conv1.weight"])
    else:  # small stem: a 3x3 convolution that the 7x7 filters cannot fill
        assert net_keys["conv1"].weight.shape == (64, 3, 3, 3)
    assert model.classifier.linear.out_features == 4  # the head is new, not ImageNet's fc


def test_grey_images_get_the_rgb_filters_summed(cache: dict) -> None:
    model = ResNet18(1, 2, input_size=128, **KNOBS).eval()
    conv1 = model.trunk[0].weight
    assert conv1.shape == (64, 1, 7, 7)
    assert torch.allclose(conv1, cache["conv1.weight"].sum(dim=1, keepdim=True))
    grey = torch.rand(1, 1, 32, 32)
    rgb_response = torch.nn.functional.conv2d(grey.expand(1, 3, 32, 32), cache["conv1.weight"])
    assert torch.allclose(torch.nn.functional.conv2d(grey, conv1), rgb_response, atol=1e-5)


def test_build_model_seeds_the_head_and_reads_the_file_once(cache: dict, monkeypatch) -> None:
    cfg = OmegaConf.load(REPO / "conf" / "model" / "resnet18.yaml")
    cfg.pretrained = True
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    a = build_model(cfg, in_channels=3, n_classes=2, seed=1, input_size=224)
    b = build_model(cfg, in_channels=3, n_classes=2, seed=1, input_size=224)
    c = build_model(cfg, in_channels=3, n_classes=2, seed=2, input_size=224)
    assert len(loads) == 1 and loads[0]["weights_only"] is True
    assert torch.equal(a.trunk[0].weight, c.trunk[0].weight)  # ImageNet, not the seed
    assert torch.equal(a.classifier.linear.weight, b.classifier.linear.weight)
    assert not torch.equal(a.classifier.linear.weight, c.classifier.linear.weight)


def test_a_damaged_or_foreign_file_is_a_config_error(cache: dict) -> None:
    pre.weights_path().write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable ResNet-18 state dict"):
        ResNet18(3, 2, **KNOBS)
    torch.save({"conv1.weight": torch.zeros(64, 3, 5, 5)}, pre.weights_path())
    with pytest.raises(ConfigError, match="do not fit ResNet-18"):
        ResNet18(3, 2, **dict(KNOBS, small_input_stem=False))


@pytest.mark.slow
def test_cli_without_the_weights_fails_in_the_config_check(tmp_path: Path) -> None:
    proc = run_cli(["model=resnet18", "model.pretrained=true", *FAST_CLI], tmp_path,
                   env={"TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "resnet18-f37072fd.pth" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
