"""The dataset type every source returns: uint8 image tensors plus labels."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from al_sim.maths.task import Task, TaskType
from al_sim.runtime.errors import DataError

if TYPE_CHECKING:
    from al_sim.data.sources import SourceFile


class ImageRows:
    """Rows ``indices`` of a uint8 image tensor, gathered only when sliced or indexed.

    Stands in for ``images[indices]`` where that copy would be the whole pool
    (scoring a memory-mapped pool): ``len``, ``shape``, ``dtype``, ``ndim``, and
    ``rows[a:b]`` / ``rows[index_tensor]`` return the gathered uint8 tensor of
    just those rows, which is all the trainer asks of its input.
    """

    def __init__(self, images: torch.Tensor, indices: torch.Tensor) -> None:
        self._images, self._indices = images, indices

    def __len__(self) -> int:
        return len(self._indices)

    @property
    def shape(self) -> torch.Size:
        """``(len, C, H, W)``, or ``(len, C, D, H, W)`` for volumes."""
        return torch.Size((len(self._indices), *self._images.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        """The images' dtype (uint8)."""
        return self._images.dtype

    @property
    def ndim(self) -> int:
        """4 for images, 5 for volumes."""
        return self._images.ndim

    @property
    def device(self) -> torch.device:
        """Where the images are (the CPU, for a memory-mapped pool)."""
        return self._images.device

    def __getitem__(self, key: slice | int | torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(key, np.ndarray):
            key = torch.from_numpy(key)
        return self._images[self._indices[key]]


# uint8 images ``N x C x H x W`` (volumes: ``N x C x D x H x W``) as the trainer takes them: a
# tensor, or pool rows gathered batch by batch (a memory-mapped pool).
Images = torch.Tensor | ImageRows


@dataclass
class ALDataset:
    """A pool to query, a test split to evaluate on, and optionally a validation split.

    Images are uint8 tensors ``N x C x H x W``, or ``N x C x D x H x W`` for volumes (CT,
    MRI: ``spatial_rank`` 3); conversion to float happens per batch. A pool too large for
    memory is a tensor over a read-only memory map (``memory_mapped``): index it through
    ``pool_rows`` so that only the batch in use is read, and never write to it. ``pool_y``
    holds the answers the simulated oracle reveals; -1 marks a pool image whose label is unknown (an
    unlabelled folder pool, for a human oracle). ``task`` (from ``task_type``) says what a label is
    (``al_sim.maths.task``): one class per image (``N`` ints) or, for ``multilabel``,
    a set of findings (``N x F`` 0/1, ``class_names`` naming the findings).
    ``initial_labeled`` fixes the initial labelled set when the source defines
    one (image folders); otherwise the budget draws it.
    """

    name: str
    pool_x: torch.Tensor
    pool_y: np.ndarray
    test_x: torch.Tensor
    test_y: np.ndarray
    class_names: list[str]
    val_x: torch.Tensor | None = None
    val_y: np.ndarray | None = None
    initial_labeled: np.ndarray | None = None
    pool_ids: list[str] | None = None
    memory_mapped: bool = False  # pool_x maps a file: gather it batch by batch (pool_rows)
    # the files it was read from, by content (al_sim.data.sources): a run fails if one changes
    sources: list[SourceFile] = field(default_factory=list)
    # what the source declares; None: binary for 2 classes, else multiclass
    task_type: InitVar[TaskType | str | None] = None
    task: Task = field(init=False)  # the task, with class_names as its outputs

    def __post_init__(self, task_type: TaskType | str | None) -> None:
        self.task = Task.of(task_type, self.class_names)
        self.pool_y = self.task.check(self.pool_y, f"{self.name}: pool", unknown_ok=True)
        self.test_y = self.task.check(self.test_y, f"{self.name}: test", unknown_ok=False)
        if self.val_y is not None:
            self.val_y = self.task.check(self.val_y, f"{self.name}: val", unknown_ok=False)
        self._check()

    @property
    def multilabel(self) -> bool:
        """Whether each image carries a set of findings (``task=multilabel``)."""
        return self.task.multilabel

    @property
    def n_classes(self) -> int:
        """Number of classes (of findings, for multi-label): the model's outputs."""
        return len(self.class_names)

    @property
    def n_pool(self) -> int:
        """Number of images in the pool (labelled or not)."""
        return int(self.pool_x.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of every image, ``(C, D, H, W)`` of every volume."""
        return tuple(int(d) for d in self.pool_x.shape[1:])

    @property
    def spatial_rank(self) -> int:
        """2 for images, 3 for volumes."""
        return self.pool_x.ndim - 2

    @property
    def volumes(self) -> bool:
        """Whether the images are volumes (``N x C x D x H x W``)."""
        return self.spatial_rank == 3

    def pool_rows(self, indices: np.ndarray) -> Images:
        """Pool images ``indices``: a gathered tensor, or lazy rows when the pool is on disk."""
        idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return ImageRows(self.pool_x, idx) if self.memory_mapped else self.pool_x[idx]

    def _check(self) -> None:
        splits = [("pool", self.pool_x, self.pool_y), ("test", self.test_x, self.test_y)]
        if self.val_x is not None and self.val_y is not None:
            splits.append(("val", self.val_x, self.val_y))
        for split, x, y in splits:
            if x.dtype != torch.uint8 or x.ndim not in (4, 5):
                raise DataError(
                    f"{self.name}: {split} images must be uint8 N x C x H x W (volumes: "
                    f"N x C x D x H x W), got {x.dtype} with shape {tuple(x.shape)}"
                )
            if x.shape[0] != len(y):
                raise DataError(
                    f"{self.name}: {split} has {x.shape[0]} images but {len(y)} labels"
                )
            if x.shape[1:] != self.pool_x.shape[1:]:
                raise DataError(
                    f"{self.name}: {split} images are {tuple(x.shape[1:])}, pool images are "
                    f"{tuple(self.pool_x.shape[1:])}; resize them to one size "
                    "(dataset.image_size=...)"
                )
        if len(self.pool_y) == 0:
            raise DataError(f"{self.name}: the pool is empty (no training images); check "
                            "dataset.root and that the dataset's files hold its pool")
        if len(self.test_y) == 0:
            raise DataError(f"{self.name}: the test split is empty; check dataset.root and "
                            "that the dataset's files hold its test images")
        if (self.pool_y < 0).any() or self.multilabel:
            return  # unknown pool labels; a finding may be absent from a small pool
        missing = sorted(set(np.unique(self.test_y)) - set(np.unique(self.pool_y)))
        if missing:
            names = ", ".join(self.class_names[i] for i in missing)
            raise DataError(
                f"{self.name}: the test split has class(es) {names} that never occur in the "
                "pool, so no model can learn them; remove them from the test split or add "
                "pool images of them"
            )
