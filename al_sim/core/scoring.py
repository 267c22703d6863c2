"""What is asked of a trained model over images addressed by index (a ``Need``), and where those
images come from (a ``Source``: a dataset's pool or test set, with an identity). The strategies'
view and the loop ask ``Trainer.score`` with both, so a stack's members asking the same source
can be answered by one pass (``core/stack_scoring.py``); alone, it is the trainer's own pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from al_sim.data.base import Images

Kind = Literal["probs", "features", "features_and_probs", "mc"]
Output = np.ndarray | tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Need:
    """One output over some images: probabilities ``N x C``, embeddings ``N x D``, both from
    one pass, or ``samples`` MC-dropout probabilities ``N x T x C`` drawn from ``seed``."""

    kind: Kind
    samples: int = 0
    seed: int = 0

    @property
    def features(self) -> bool:
        """Whether the answer needs the embeddings (MC samples are drawn from them)."""
        return self.kind != "probs"

    @property
    def probs(self) -> bool:
        """Whether the answer needs the deterministic probabilities."""
        return self.kind in ("probs", "features_and_probs")


PROBS = Need("probs")


def one_array(out: Output) -> np.ndarray:
    """``out`` as the one array that every need but ``features_and_probs`` answers."""
    if isinstance(out, tuple):
        raise TypeError("two arrays (features and probabilities) where one was asked for")
    return out


def two_arrays(out: Output) -> tuple[np.ndarray, np.ndarray]:
    """``out`` as the (features, probabilities) pair that ``features_and_probs`` answers."""
    if not isinstance(out, tuple):
        raise TypeError("one array where features and probabilities were asked for")
    return out


@dataclass(frozen=True)
class Source:
    """Images by index (``rows``), their count and identity: sources with one ``key`` hold the
    same images (a stack's members share their dataset), so their rows may be read from any."""

    key: tuple[int, str]
    rows: Callable[[np.ndarray], Images]
    size: int
    whole: Images | None = None  # every row at once, when held (else rows(arange(size)))

    def __call__(self, indices: np.ndarray) -> Images:
        return self.rows(indices)

    def take(self, indices: np.ndarray | None) -> Images:
        """The rows at ``indices`` (every row with None)."""
        if indices is not None:
            return self.rows(indices)
        return self.whole if self.whole is not None else self.rows(np.arange(self.size))


def source_of(rows: Callable[[np.ndarray], Images] | Source) -> Source:
    """``rows`` as a ``Source``: a bare function is a source of its own (shares no pass)."""
    if isinstance(rows, Source):
        return rows
    return Source((id(rows), "rows"), rows, -1)


def images_source(x: Images, owner: object, name: str) -> Source:
    """The rows of ``x`` (e.g. a test set placed on the device) as ``owner``'s ``name``."""
    return Source((id(owner), name),
                  lambda idx: x[torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(x.device)],
                  len(x), x)
