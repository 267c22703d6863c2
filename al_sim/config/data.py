"""Schemas of the ``dataset`` group and its preprocessing; each loader takes its schema as is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from al_sim.config.checks import fraction, non_negative, positive, set_default
from al_sim.runtime.errors import ConfigError, DataError

_PRE = "dataset.preprocess"


@dataclass
class PreprocessConf:
    """Per-batch normalisation and optional train-time augmentation."""

    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    hflip: bool = False
    vflip: bool = False
    dflip: bool = False  # volumes only: flip along the slice (depth) axis
    rotation_degrees: float = 0.0  # volumes: in-plane (about the slice axis)
    random_resized_crop_scale: float = 1.0  # 1.0 = off; e.g. 0.8 crops 80-100% of the area
    # (of the volume, for volumes)

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ConfigError("dataset.preprocess.mean and .std must have the same length (one "
                              f"value per channel); {set_default(_PRE, self, 'mean')} and "
                              f"{set_default(_PRE, self, 'std').removeprefix('set ')}")
        if any(s <= 0 for s in self.std):
            raise ConfigError("dataset.preprocess.std values must be > 0; "
                              f"{set_default(_PRE, self, 'std')}")
        non_negative("dataset.preprocess", rotation_degrees=self.rotation_degrees)
        if not 0.0 < self.random_resized_crop_scale <= 1.0:
            raise ConfigError("dataset.preprocess.random_resized_crop_scale must be in (0, 1] "
                              "(1: no crop); "
                              f"{set_default(_PRE, self, 'random_resized_crop_scale')}")


def check_generated(conf: Any) -> None:
    """The checks every generated dataset shares: sizes, seed, image side, difficulty and
    label noise (ConfigError naming the key)."""
    positive("dataset", n_pool=conf.n_pool, n_test=conf.n_test)
    non_negative("dataset", seed=conf.seed)
    if conf.image_size < 16:
        raise ConfigError(f"dataset.image_size must be >= 16, got {conf.image_size}; "
                          f"{set_default('dataset', conf, 'image_size')}")
    if not 0.0 <= conf.difficulty <= 1.0:
        raise ConfigError(f"dataset.difficulty must be in [0, 1], got {conf.difficulty}; "
                          f"{set_default('dataset', conf, 'difficulty')}")
    fraction("dataset", label_noise=conf.label_noise)


@dataclass
class SyntheticDatasetConf:
    """Generated screening images: normal / benign round lesion / malignant irregular lesion."""

    _target_: str = "al_sim.data.synthetic.load_synthetic"
    name: str = "synthetic"
    n_pool: int = 5000
    n_test: int = 2000
    image_size: int = 28
    class_proportions: list[float] = field(default_factory=lambda: [0.8, 0.15, 0.05])
    difficulty: float = 0.7
    label_noise: float = 0.0
    seed: int = 0
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)

    def __post_init__(self) -> None:
        check_generated(self)
        if len(self.class_proportions) not in (2, 3) or any(
            p <= 0 for p in self.class_proportions
        ):
            raise ConfigError(
                "dataset.class_proportions must be 2 or 3 positive numbers "
                "(normal, benign[, malignant]); "
                f"{set_default('dataset', self, 'class_proportions')}"
            )


@dataclass
class SyntheticChestDatasetConf:
    """Generated chest radiographs with co-occurring findings (multi-label)."""

    _target_: str = "al_sim.data.synthetic_chest.load_synthetic_chest"
    name: str = "synthetic_chest"
    n_pool: int = 5000
    n_test: int = 2000
    image_size: int = 28
    # cardiomegaly, effusion, opacity, nodule (effusion: without cardiomegaly)
    prevalence: list[float] = field(default_factory=lambda: [0.2, 0.1, 0.15, 0.04])
    co_occurrence: float = 0.5  # P(effusion | cardiomegaly)
    difficulty: float = 0.8
    label_noise: float = 0.0  # share of pool finding bits flipped (the oracle's truth)
    seed: int = 0
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)

    def __post_init__(self) -> None:
        check_generated(self)
        if len(self.prevalence) != 4 or any(not 0 < p < 1 for p in self.prevalence):
            raise ConfigError("dataset.prevalence must be 4 numbers in (0, 1): cardiomegaly, "
                              f"effusion, opacity, nodule; got {list(self.prevalence)}; "
                              f"{set_default('dataset', self, 'prevalence')}")
        if not 0.0 <= self.co_occurrence <= 1.0:
            raise ConfigError(f"dataset.co_occurrence must be in [0, 1], got {self.co_occurrence}; "
                              f"{set_default('dataset', self, 'co_occurrence')}")


@dataclass
class SyntheticVolumeDatasetConf:
    """Generated CT-like volumes: textured tissue, a rare round nodule class, vessel look-alikes."""

    _target_: str = "al_sim.data.synthetic_volume.load_synthetic_volume"
    name: str = "synthetic_volume"
    n_pool: int = 1000
    n_test: int = 400
    image_size: int = 28  # voxels a side: volumes image_size^3
    class_proportions: list[float] = field(default_factory=lambda: [0.9, 0.1])  # normal, nodule
    difficulty: float = 0.6
    label_noise: float = 0.0
    seed: int = 0
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)

    def __post_init__(self) -> None:
        check_generated(self)
        if len(self.class_proportions) != 2 or any(p <= 0 for p in self.class_proportions):
            raise ConfigError("dataset.class_proportions must be 2 positive numbers (normal, "
                              f"nodule), got {list(self.class_proportions)}; "
                              f"{set_default('dataset', self, 'class_proportions')}")


@dataclass
class MedMNISTDatasetConf:
    """Official MedMNIST ``.npz`` archives from ``root``."""

    _target_: str = "al_sim.data.medmnist.load_medmnist"
    name: str = "pneumoniamnist"
    size: int = 28
    root: str = "~/.medmnist"
    verify_checksum: bool = False
    download: bool = False
    max_pool: int | None = None  # cap the pool (stratified subsample of the train split)
    seed: int = 0  # the dataset's own seed (the max_pool subsample): fixed across run seeds
    in_memory_max_mb: float | None = None  # larger image arrays are memory-mapped (None: auto)
    cache_dir: str | None = None  # where compressed large arrays are extracted (None: root)
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)

    def __post_init__(self) -> None:
        if self.in_memory_max_mb is not None:
            non_negative("dataset", in_memory_max_mb=self.in_memory_max_mb)
        if not self.name:
            raise ConfigError("dataset.name must name a MedMNIST dataset, e.g. pneumoniamnist")
        if self.size not in (28, 64, 128, 224):
            raise ConfigError(f"dataset.size must be one of 28, 64, 128, 224, got {self.size}; "
                              f"{set_default('dataset', self, 'size')}")
        if self.name.endswith("3d") and self.size not in (28, 64):
            raise ConfigError(f"dataset.size must be 28 or 64 for the 3D dataset {self.name} "
                              f"(28^3 or 64^3 voxels), got {self.size}; "
                              f"{set_default('dataset', self, 'size')}")
        if self.max_pool is not None:
            positive("dataset", max_pool=self.max_pool)
        non_negative("dataset", seed=self.seed)
        if not self.download and not Path(self.root).expanduser().is_dir():
            what = "is not a folder" if Path(self.root).expanduser().exists() else \
                "does not exist"
            raise DataError(
                f"dataset.root={self.root} {what} (the folder of the MedMNIST .npz "
                f"files); point dataset.root= at the folder that holds {self.name}.npz (or "
                f"{self.name}_<size>.npz), or set dataset.download=true to fetch it there")


# The image-folder layout (``dataset=folder``): read by data/folder.py, written by
# data/export_folder.py and label/export.py.
INITIAL_DIR = "initial_labeled_images"
POOL_DIR = "unlabeled_pool_images"
TEST_DIR = "test_images"
POOL_LABELS_FILE = "pool_labels.csv"
# Named intensity windows [centre, width] in the modality's units (Hounsfield for CT): the
# usual radiology display settings, for dataset.window= and the labelling page's presets
# dataset.spacing of volumes (al_sim.data.volume.conform)
SPACING_MODES = ("stretch", "isotropic")
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "ct_soft_tissue": (40.0, 400.0),
    "ct_lung": (-600.0, 1500.0),
    "ct_bone": (400.0, 1800.0),
    "ct_brain": (40.0, 80.0),
    "ct_liver": (60.0, 160.0),
}


@dataclass
class FolderDatasetConf:
    """Image folders laid out as the annotation workflow keeps them (see README)."""

    _target_: str = "al_sim.data.folder.load_folder"
    name: str = "folder"
    root: str | None = None
    image_size: int = 28
    channels: int = 1
    test_fraction: float | None = None
    labels_file: str = POOL_LABELS_FILE
    labels_required: bool = True  # false: the pool may lack labels (set by oracle=human)
    seed: int = 0
    # multi-label: a manifest CSV (ChestX-ray14 style or file + 0/1 finding columns) instead
    # of class folders; images under images_dir; findings: the known names (None: as found)
    manifest: str | None = None
    images_dir: str = "images"
    findings: list[str] | None = None
    # DICOM files and volumes: [centre, width] or a preset name of WINDOW_PRESETS (e.g.
    # ct_soft_tissue) overrides the file's own VOI LUT / window (None: the file's, or min-max)
    window: Any = None
    # volumes: class folders hold NIfTI files (.nii, .nii.gz) and DICOM-series sub-folders,
    # each read as image_size^3 (al_sim.data.folder_volumes)
    volumes: bool = False
    max_voxels: int = 2**28  # volumes: refuse a file that declares more voxels (1 GiB float32)
    # volumes: stretch (each axis to image_size, spacing ignored) | isotropic (cubic voxels,
    # the longest physical side fills image_size, the others padded; al_sim.data.volume)
    spacing: str = "stretch"
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)

    def __post_init__(self) -> None:
        if not self.root:
            raise ConfigError(
                "dataset.root is not set; point it at the image folder, e.g. dataset=folder "
                "dataset.root=/data/xrays (python -m al_sim.data.export_folder --help builds one)"
            )
        positive("dataset", image_size=self.image_size)
        non_negative("dataset", seed=self.seed)
        if self.channels not in (1, 3):
            raise ConfigError(f"dataset.channels must be 1 or 3, got {self.channels}; set "
                              "dataset.channels=1 (greyscale) or 3 (RGB)")
        if self.test_fraction is not None:
            fraction("dataset", low_open=True, test_fraction=self.test_fraction)
        self._check_window()
        positive("dataset", max_voxels=self.max_voxels)
        if self.spacing not in SPACING_MODES:
            raise ConfigError(f"dataset.spacing={self.spacing} is not one of "
                              f"{', '.join(SPACING_MODES)}; stretch fills image_size on every "
                              "axis, isotropic keeps the physical proportions and pads")
        if self.volumes and (self.manifest is not None or self.channels != 1):
            raise ConfigError("dataset.volumes=true reads greyscale volumes from class folders: "
                              "drop dataset.manifest and keep dataset.channels=1")
        if self.findings is not None and len(set(self.findings)) != len(self.findings):
            raise ConfigError(f"dataset.findings lists a name twice: {list(self.findings)}")

    def _check_window(self) -> None:
        if self.window is None:
            return
        if isinstance(self.window, str):
            if self.window not in WINDOW_PRESETS:
                raise ConfigError(f"dataset.window={self.window} is not a preset ("
                                  f"{', '.join(sorted(WINDOW_PRESETS))}); name one or give "
                                  "[centre, width], e.g. dataset.window=[40,400]")
            return
        try:
            pair = [float(v) for v in self.window]
        except (TypeError, ValueError):
            pair = []
        if len(pair) != 2 or not pair[1] > 0:
            raise ConfigError(f"dataset.window must be [centre, width] with width > 0 or a "
                              f"preset ({', '.join(sorted(WINDOW_PRESETS))}), got "
                              f"{self.window!r}; e.g. dataset.window=[40,400]")


FOLDER_LOADER = "al_sim.data.folder.load_folder"


def is_folder_dataset(dataset: Mapping[str, Any]) -> bool:
    """Whether a dataset node loads an image folder (its pool files are the user's own)."""
    return str(dataset.get("_target_")) == FOLDER_LOADER
