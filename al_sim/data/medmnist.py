"""MedMNIST v2 (2D, and the six 3D datasets) from the official ``.npz`` archives: pool = train,
test = test, val kept.

Metadata (task, label names, channels, split sizes, MD5s, URLs) comes from the
``medmnist`` package's ``INFO``. Images stay uint8 and are never copied whole:
grey arrays gain a channel axis by a view, RGB arrays ``N x H x W x 3`` become
``N x 3 x H x W`` by a view too (a channels-last tensor, the layout the trainer
uses anyway), 3D volumes ``N x D x H x W`` become ``N x 1 x D x H x W``. Archives are
read with ``allow_pickle=False`` only. Image arrays above ``dataset.in_memory_max_mb``
(MedMNIST+ at 128/224 px, large 3D pools) are memory-mapped, not read: see
:mod:`al_sim.data.npz`.
"""

from __future__ import annotations

import logging
import math
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from al_sim.config.data import MedMNISTDatasetConf
from al_sim.data.base import ALDataset
from al_sim.data.npz import in_memory_max_bytes, read_member
from al_sim.data.sources import SourceFile, file_digest
from al_sim.maths.sampling import stratified_sample
from al_sim.maths.task import Task, TaskType
from al_sim.runtime.errors import DataError
from al_sim.runtime.reading import reading

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_NPY_MAGIC = b"\x93NUMPY"
_LABELS_IN_MEMORY = 1 << 62  # label vectors are always read whole


def _info_table() -> dict[str, dict]:
    from medmnist.info import INFO

    return INFO


def dataset_names() -> list[str]:
    """Every MedMNIST dataset the installed ``medmnist`` package knows (2D and 3D)."""
    return list(_info_table())


def is_volume(name: str) -> bool:
    """Whether a MedMNIST dataset holds volumes (OrganMNIST3D, NoduleMNIST3D, ...)."""
    return name.endswith("3d")


def dataset_info(name: str) -> dict:
    """``medmnist.INFO[name]``; DataError naming the valid names otherwise."""
    table = _info_table()
    if name not in table:
        raise DataError(
            f"dataset.name={name!r} is unknown; valid names: {', '.join(dataset_names())}"
        )
    return table[name]


def is_multilabel(info: dict) -> bool:
    """Whether a MedMNIST INFO entry is a multi-label task (ChestMNIST's 14 findings)."""
    return "multi-label" in info["task"]


def file_name(name: str, size: int) -> str:
    """The archive's name as the medmnist package stores it: ``name.npz`` or ``name_64.npz``."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def _size_key(key: str, size: int) -> str:
    return key if size == 28 else f"{key}_{size}"


def md5sum(path: Path) -> str:
    """MD5 of a file, read in 1 MiB chunks."""
    return file_digest(path)


def _fetch_hint(info: dict, name: str, size: int, root: Path) -> str:
    return (
        f"get it with dataset.download=true (needs internet), or download "
        f"{info[_size_key('url', size)]} into {root}, or run `python -m medmnist download "
        f"--size={size} --root={root}` (fetches every MedMNIST dataset of that size); or point "
        f"dataset.root= at the folder that holds {file_name(name, size)}"
    )


def _download(info: dict, name: str, size: int, root: Path) -> None:
    """Fetch the archive with the package's URL and MD5 (the call ``medmnist`` itself makes)."""
    from torchvision.datasets import utils as tv_utils

    url = info[_size_key("url", size)]
    try:
        root.mkdir(parents=True, exist_ok=True)
        tv_utils.download_url(url, root=str(root), filename=file_name(name, size),
                              md5=info[_size_key("MD5", size)])
    except Exception as exc:  # noqa: BLE001 - network, disk and HTTP errors alike
        (root / file_name(name, size)).unlink(missing_ok=True)  # no half-written archive
        raise DataError(
            f"could not download {file_name(name, size)} from {url} into {root} "
            f"({type(exc).__name__}: {exc}); download it on a machine with internet and put "
            f"it in {root}, or point dataset.root= at a folder that holds it"
        ) from exc


def check_checksum(path: Path, info: dict, size: int, verify: bool,
                   actual: str | None = None) -> None:
    """Compare the file's MD5 (``actual``, computed when None) with the official one: a
    warning, or a DataError if ``verify``."""
    expected = info.get(_size_key("MD5", size))
    if not expected:
        return
    actual = md5sum(path) if actual is None else actual
    if actual == expected:
        return
    if verify:
        raise DataError(
            f"{path}: MD5 {actual} does not match the official {expected}; re-download the "
            "file, or set dataset.verify_checksum=false to use this copy anyway"
        )
    log.warning("%s: MD5 %s differs from the official %s (a re-saved copy or a damaged file); "
                "set dataset.verify_checksum=true to refuse it", path, actual, expected)


@dataclass
class MedMNISTSplits:
    """Validated arrays of one archive: uint8 images (``N x H x W [x C]``) and int64 labels."""

    path: Path
    info: dict
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    source: SourceFile | None = None  # the archive as read (its MD5), to notice it change later

    @property
    def class_names(self) -> list[str]:
        """Label names in label order."""
        labels = self.info["label"]
        return [labels[str(i)] for i in range(len(labels))]


def _check_images(x: np.ndarray, key: str, path: Path, info: dict, size: int,
                  volume: bool = False) -> np.ndarray:
    channels = info["n_channels"]
    axes = 3 if volume else 2
    if x.ndim == axes + 2 and x.shape[-1] == 1 and channels == 1:
        x = x[..., 0]
    expected = (size,) * axes if channels == 1 else (*(size,) * axes, channels)
    if len(x) == 0:
        raise DataError(f"{path}: {key!r} holds no images; the archive is not a whole official "
                        "MedMNIST file: re-download it")
    if x.dtype != np.uint8 or x.shape[1:] != expected:
        raise DataError(
            f"{path}: {key!r} must be uint8 N x {' x '.join(map(str, expected))} "
            f"(size {size}, {channels} channel(s)), got {x.dtype} {x.shape}; is dataset.size "
            "right and is the file an official MedMNIST archive?"
        )
    return x


def _check_labels(y: np.ndarray, key: str, path: Path, n_images: int, n_classes: int,
                  multilabel: bool = False) -> np.ndarray:
    if multilabel:  # ChestMNIST: N x F finding bits
        if y.shape != (n_images, n_classes) or not np.issubdtype(y.dtype, np.integer) or (
                len(y) and (y.min() < 0 or y.max() > 1)):
            raise DataError(f"{path}: {key!r} must be {n_images} x {n_classes} finding bits "
                            f"(0/1 integers, one column per finding), got {y.dtype} {y.shape}")
        return y.astype(np.int64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n_images or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{path}: {key!r} must be {n_images} integer class labels (N or N x 1), "
            f"got {y.dtype} {y.shape}"
        )
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(
            f"{path}: {key!r} has labels in [{y.min()}, {y.max()}] but the dataset has "
            f"{n_classes} classes (0..{n_classes - 1})"
        )
    return y.astype(np.int64)


def read_medmnist(name: str, size: int = 28, root: str | Path = "~/.medmnist",
                  verify_checksum: bool = False, download: bool = False,
                  in_memory_max_mb: float | None = math.inf,
                  cache_dir: str | Path | None = None) -> MedMNISTSplits:
    """Open, check and read every split of one MedMNIST archive (DataError on any problem).

    Image arrays larger than ``in_memory_max_mb`` (None: auto, see
    :func:`al_sim.data.npz.in_memory_max_bytes`) are memory-mapped; compressed
    ones are extracted once into ``cache_dir`` (default ``<root>/al_sim_cache``).
    """
    info = dataset_info(name)
    root = Path(root).expanduser().resolve()
    path = root / file_name(name, size)
    if download and not path.exists():
        _download(info, name, size, root)
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a file (a folder, pipe or device); put the MedMNIST "
                        f"archive {path.name} there, or set dataset.root= to the folder that "
                        "holds it")
    if not path.is_file():
        where = f"in {root}" if root.is_dir() else f"(the folder {root} does not exist)"
        raise DataError(f"MedMNIST file {path.name} not found {where}; "
                        + _fetch_hint(info, name, size, root))
    with reading(path, "the MedMNIST archive", "re-download it"):
        source = SourceFile.of(path)  # its MD5: the checksum check's, and a later change's
        check_checksum(path, info, size, verify_checksum, source.content)
        splits = _read_splits(path, info, size, in_memory_max_mb, cache_dir)
    splits.source = source
    return splits


def _read_splits(path: Path, info: dict, size: int, in_memory_max_mb: float | None,
                 cache_dir: str | Path | None) -> MedMNISTSplits:
    with path.open("rb") as f:
        if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise DataError(f"{path} holds a single array, not an .npz archive of splits; "
                            "re-download the official file")
    n_classes = len(info["label"])
    multilabel = is_multilabel(info)
    cache = None if cache_dir is None else Path(cache_dir).expanduser().resolve()
    max_bytes = in_memory_max_bytes(in_memory_max_mb)
    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        files = [n.removesuffix(".npy") for n in archive.namelist()]
        wanted = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
        missing = [k for k in wanted if k not in files]
        if missing:
            raise DataError(
                f"{path} lacks the array(s) {', '.join(missing)} (it has: "
                f"{', '.join(files) or 'none'}); a MedMNIST archive holds {', '.join(wanted)}"
            )
        for split in SPLITS:
            x = read_member(archive, path, f"{split}_images", max_bytes, cache)
            x = _check_images(x, f"{split}_images", path, info, size,
                              is_volume(str(info["python_class"]).lower()))
            y = read_member(archive, path, f"{split}_labels", _LABELS_IN_MEMORY)
            labels[split] = _check_labels(y, f"{split}_labels", path, len(x), n_classes,
                                          multilabel)
            images[split] = x
    counts = {s: len(labels[s]) for s in SPLITS}
    if counts != info["n_samples"]:
        log.warning("%s: split sizes %s differ from the official %s", path, counts,
                    info["n_samples"])
    return MedMNISTSplits(path, info, images, labels)


def to_tensor(images: np.ndarray, volume: bool = False) -> torch.Tensor:
    """uint8 ``N x C x H x W`` view of ``N x H x W`` or ``N x H x W x C`` images (no copy);
    ``N x 1 x D x H x W`` of ``N x D x H x W`` volumes.

    A read-only memory map becomes a tensor over the same pages (torch warns
    that it cannot write to it; nothing in al_sim writes to images).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x = torch.from_numpy(images)
    return x.unsqueeze(1) if x.ndim == 3 or volume else x.permute(0, 3, 1, 2)


def load_medmnist(**cfg: Any) -> ALDataset:
    """Build a MedMNIST dataset from its config fields (see ``MedMNISTDatasetConf``)."""
    conf = MedMNISTDatasetConf(**cfg)
    data = read_medmnist(conf.name, conf.size, conf.root, conf.verify_checksum, conf.download,
                         conf.in_memory_max_mb, conf.cache_dir)
    task = Task.of(TaskType.multilabel if is_multilabel(data.info) else None, data.class_names)
    pool_x, pool_y = data.images["train"], data.labels["train"]
    keep = np.arange(len(pool_y))
    if conf.max_pool is not None and conf.max_pool < len(pool_y):
        keep = stratified_sample(task.strata(pool_y), conf.max_pool,
                                 np.random.default_rng(conf.seed))
        pool_x, pool_y = pool_x[keep], pool_y[keep]
    if data.info["task"] == "ordinal-regression":
        log.info("%s: ordinal grades are used as %d classes", conf.name, len(data.class_names))
    volume = is_volume(conf.name)
    return ALDataset(
        name=conf.name,
        pool_x=to_tensor(pool_x, volume),
        pool_y=pool_y,
        test_x=to_tensor(data.images["test"], volume),
        test_y=data.labels["test"],
        class_names=data.class_names,
        val_x=to_tensor(data.images["val"], volume),
        val_y=data.labels["val"],
        pool_ids=[f"train_{i:06d}" for i in keep],
        memory_mapped=isinstance(pool_x, np.memmap),
        task_type=task.kind,
        sources=[] if data.source is None else [data.source],
    )
