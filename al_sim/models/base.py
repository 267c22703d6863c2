"""The model interface every strategy relies on: an embedding and a head on top of it."""

from __future__ import annotations

import torch
from torch import nn


class ALModel(nn.Module):
    """A classifier split into a deterministic trunk (``features``) and a ``head``.

    ``head`` holds the only stochastic layer (dropout), so MC-dropout strategies
    can run the trunk once and the head many times.
    """

    embedding_dim: int
    n_classes: int
    spatial_rank: int = 2  # the images it takes: 2 (N x C x H x W) or 3 (volumes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding, ``B x embedding_dim``."""
        raise NotImplementedError

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``B x n_classes`` from embeddings."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``B x n_classes``."""
        return self.head(self.features(x))


class DropoutHead(nn.Module):
    """Dropout then a linear layer: the stochastic part of every al_sim model."""

    def __init__(self, in_features: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, n_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(z))
