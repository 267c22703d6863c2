"""A model's memory, measured on small models: an inference pass's peak of live tensors
(the cap of ``trainer.inference_memory_mb``) against the sum of its activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from al_sim.core.footprint import activation_bytes, inference_bytes

WIDTH = 1000
ROW = WIDTH * 4  # one float32 row of the chains below


class Residual(nn.Module):
    """``x + b(a(x))``: ``x`` stays alive while ``a`` and ``b`` run."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


def chain(layers: int) -> nn.Sequential:
    """``layers`` linear layers, each followed by an in-place ReLU (no storage of its own)."""
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(WIDTH, WIDTH), nn.ReLU(inplace=True)]
    return nn.Sequential(*mods).eval()


def test_a_chain_peaks_at_its_input_and_two_outputs_whatever_its_depth() -> None:
    x = torch.zeros(1, WIDTH)
    for layers in (2, 6, 12):
        model = chain(layers)
        assert inference_bytes(model, x) == 3 * ROW  # the batch, a layer's input and output
        assert activation_bytes(model, x) == 2 * layers * ROW  # every leaf's output, summed


def test_a_skip_connection_is_counted_while_it_is_held() -> None:
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), Residual()).eval()
    # the batch, the skip input, a's output and b's output alive at once
    assert inference_bytes(model, torch.zeros(1, WIDTH)) == 4 * ROW


def test_the_peak_scales_with_the_batch_and_ignores_parameters() -> None:
    model = chain(4)
    one = inference_bytes(model, torch.zeros(1, WIDTH))
    assert inference_bytes(model, torch.zeros(8, WIDTH)) == 8 * one
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert params > 100 * one  # 16 MB of weights, none of them counted


def test_a_convolution_also_counts_an_output_sized_scratch_buffer() -> None:
    model = nn.Conv2d(1, 8, 3, padding=1).eval()
    x = torch.zeros(1, 1, 16, 16)
    out = 8 * 16 * 16 * 4
    assert inference_bytes(model, x) == x.nbytes + 2 * out


def test_the_measure_is_deterministic_and_needs_only_shapes() -> None:
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(inplace=True),
                          nn.MaxPool3d(2), nn.Flatten(), nn.Linear(4 * 8**3, 2)).eval()
    x = torch.zeros(1, 1, 16, 16, 16)
    real = inference_bytes(model, x)
    assert real == inference_bytes(model, x) and real < activation_bytes(model, x)
    # shapes only (a stack's template): within the few bytes of batch-norm statistics
    # that the meta kernel allocates and the CPU kernel does not
    assert inference_bytes(model.to("meta"), x.to("meta")) == pytest.approx(real, rel=1e-3)
