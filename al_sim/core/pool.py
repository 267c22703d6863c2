"""Who is labelled: the single source of truth of the labelled / unlabelled split."""

from __future__ import annotations

import numpy as np


class LabelPool:
    """Tracks, for every pool image, whether it is labelled, with what label and in which round."""

    def __init__(self, size: int, n_findings: int | None = None) -> None:
        """``size`` images, each labelled with one class, or (``n_findings``) a 0/1 row."""
        if size <= 0:
            raise ValueError(f"a pool needs at least one image, got {size}")
        shape = (size,) if n_findings is None else (size, n_findings)
        self._labels = np.full(shape, -1, dtype=np.int64)
        self._round = np.full(size, -1, dtype=np.int64)

    @property
    def size(self) -> int:
        """Number of images in the pool."""
        return len(self._labels)

    @property
    def n_labeled(self) -> int:
        """Number of labelled images."""
        return int(np.count_nonzero(self._round >= 0))

    @property
    def n_unlabeled(self) -> int:
        """Number of images still unlabelled."""
        return self.size - self.n_labeled

    def labeled_indices(self) -> np.ndarray:
        """Pool indices of labelled images, ascending."""
        return np.flatnonzero(self._round >= 0)

    def unlabeled_indices(self) -> np.ndarray:
        """Pool indices of unlabelled images, ascending."""
        return np.flatnonzero(self._round < 0)

    def labels_of(self, indices: np.ndarray) -> np.ndarray:
        """The labels given to ``indices`` (all must be labelled)."""
        indices = np.asarray(indices, dtype=np.int64)
        if np.any(self._round[indices] < 0):
            raise ValueError("labels_of() asked for images that are not labelled")
        return self._labels[indices]

    def round_of(self, indices: np.ndarray) -> np.ndarray:
        """The round in which each of ``indices`` was labelled (-1: not labelled)."""
        return self._round[np.asarray(indices, dtype=np.int64)]

    def add(self, indices: np.ndarray, labels: np.ndarray, round_: int) -> None:
        """Label ``indices`` with ``labels`` in round ``round_``; refuses duplicates and repeats."""
        indices = np.asarray(indices, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if indices.ndim != 1 or labels.shape != (len(indices), *self._labels.shape[1:]):
            raise ValueError("indices must be 1-D and labels one per index (a class, or a "
                             "row of finding bits)")
        if len(indices) and (indices.min() < 0 or indices.max() >= self.size):
            raise IndexError(f"pool indices must be in [0, {self.size})")
        if len(np.unique(indices)) != len(indices):
            raise ValueError("the same image was selected twice in one query")
        already = indices[self._round[indices] >= 0]
        if len(already):
            raise ValueError(f"images already labelled were selected again: {already[:10]}")
        if round_ < 0:
            raise ValueError("round must be >= 0")
        self._labels[indices] = labels
        self._round[indices] = round_

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore this pool with :meth:`from_state`."""
        return {"labels": self._labels.copy(), "round": self._round.copy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> LabelPool:
        """A pool restored from :meth:`state`."""
        labels = np.asarray(state["labels"])
        pool = cls(len(labels), labels.shape[1] if labels.ndim == 2 else None)
        pool._labels = np.asarray(state["labels"], dtype=np.int64).copy()
        pool._round = np.asarray(state["round"], dtype=np.int64).copy()
        return pool
