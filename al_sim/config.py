"""Structured-config schema: every knob of al_sim, typed and validated.

Each dataclass is registered in Hydra's ConfigStore as ``schema_<name>`` in its
group; the YAML files in ``conf/`` extend these schemas, so ill-typed or
unknown keys fail at composition. Semantic checks (sizes > 0, fractions in
range) run in ``__post_init__`` when :func:`to_schema` builds the objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from al_sim.errors import ConfigError


def _positive(owner: str, **values: int | float) -> None:
    for name, value in values.items():
        if value is None or value <= 0:
            raise ConfigError(f"{owner}.{name} must be > 0, got {value}; set {owner}.{name}=<n>")


def _non_negative(owner: str, **values: int | float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ConfigError(f"{owner}.{name} must be >= 0, got {value}; set {owner}.{name}=<n>")


def _fraction(owner: str, low_open: bool = False, **values: float) -> None:
    for name, value in values.items():
        ok = (0.0 < value < 1.0) if low_open else (0.0 <= value < 1.0)
        if not ok:
            bound = "(0, 1)" if low_open else "[0, 1)"
            raise ConfigError(f"{owner}.{name} must be in {bound}, got {value}")


# --------------------------------------------------------------------------- datasets
@dataclass
class PreprocessConf:
    """Per-batch normalisation and optional train-time augmentation."""

    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    hflip: bool = False
    vflip: bool = False
    rotation_degrees: float = 0.0
    random_resized_crop_scale: float = 1.0  # 1.0 = off; e.g. 0.8 crops 80-100% of the area

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ConfigError("dataset.preprocess.mean and .std must have the same length")
        if any(s <= 0 for s in self.std):
            raise ConfigError("dataset.preprocess.std values must be > 0")
        _non_negative("dataset.preprocess", rotation_degrees=self.rotation_degrees)
        if not 0.0 < self.random_resized_crop_scale <= 1.0:
            raise ConfigError("dataset.preprocess.random_resized_crop_scale must be in (0, 1]")


@dataclass
class SyntheticDatasetConf:
    """Generated screening images: normal / benign round lesion / malignant irregular lesion."""

    _target_: str = "al_sim.data.synthetic.load_synthetic"
    name: str = "synthetic"
    n_pool: int = 5000
    n_test: int = 2000
    image_size: int = 28
    class_proportions: list[float] = field(default_factory=lambda: [0.6, 0.25, 0.15])
    difficulty: float = 0.5
    label_noise: float = 0.0
    seed: int = 0
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)

    def __post_init__(self) -> None:
        _positive("dataset", n_pool=self.n_pool, n_test=self.n_test)
        if self.image_size < 16:
            raise ConfigError(f"dataset.image_size must be >= 16, got {self.image_size}")
        if len(self.class_proportions) not in (2, 3) or any(
            p <= 0 for p in self.class_proportions
        ):
            raise ConfigError(
                "dataset.class_proportions must be 2 or 3 positive numbers "
                "(normal, benign[, malignant])"
            )
        if not 0.0 <= self.difficulty <= 1.0:
            raise ConfigError(f"dataset.difficulty must be in [0, 1], got {self.difficulty}")
        _fraction("dataset", label_noise=self.label_noise)


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
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("dataset.name must name a MedMNIST dataset, e.g. pneumoniamnist")
        if self.size not in (28, 64, 128, 224):
            raise ConfigError(f"dataset.size must be one of 28, 64, 128, 224, got {self.size}")
        if self.max_pool is not None:
            _positive("dataset", max_pool=self.max_pool)


@dataclass
class FolderDatasetConf:
    """Image folders laid out as the annotation workflow keeps them (see README)."""

    _target_: str = "al_sim.data.folder.load_folder"
    name: str = "folder"
    root: str | None = None
    image_size: int = 28
    channels: int = 1
    test_fraction: float | None = None
    labels_file: str = "pool_labels.csv"
    seed: int = 0
    preprocess: PreprocessConf = field(default_factory=PreprocessConf)

    def __post_init__(self) -> None:
        if not self.root:
            raise ConfigError(
                "dataset.root is not set; point it at the image folder, e.g. dataset=folder "
                "dataset.root=/data/xrays (python -m al_sim.data.export_folder --help builds one)"
            )
        _positive("dataset", image_size=self.image_size)
        if self.channels not in (1, 3):
            raise ConfigError(f"dataset.channels must be 1 or 3, got {self.channels}")
        if self.test_fraction is not None:
            _fraction("dataset", low_open=True, test_fraction=self.test_fraction)


# --------------------------------------------------------------------------- models
@dataclass
class SimpleCNNConf:
    """A small conv net: conv blocks of ``widths`` then a ``hidden``-wide embedding."""

    _target_: str = "al_sim.models.simple_cnn.SimpleCNN"
    name: str = "simple_cnn"
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    hidden: int = 128
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if not self.widths or any(w <= 0 for w in self.widths):
            raise ConfigError("model.widths must be a non-empty list of positive ints")
        _positive("model", hidden=self.hidden)
        _fraction("model", dropout=self.dropout)


@dataclass
class ResNet18Conf:
    """torchvision ResNet-18 adapted to small inputs (3x3 stem, no max-pool at 28 px)."""

    _target_: str = "al_sim.models.resnet.ResNet18"
    name: str = "resnet18"
    dropout: float = 0.3
    small_input_stem: bool = True

    def __post_init__(self) -> None:
        _fraction("model", dropout=self.dropout)


# --------------------------------------------------------------------------- strategies
# Strategy schemas: one per family; the helper that owns al_sim/strategies may extend them.
@dataclass
class StrategyConf:
    """A query strategy; ``_target_`` names its class."""

    _target_: str = MISSING
    name: str = MISSING


@dataclass
class BaldConf(StrategyConf):
    """BALD with MC dropout."""

    mc_samples: int = 20

    def __post_init__(self) -> None:
        _positive("strategy", mc_samples=self.mc_samples)


@dataclass
class PowerConf(StrategyConf):
    """Stochastic power sampling over a base score (Kirsch et al. 2023)."""

    beta: float = 1.0  # sampling probability proportional to score ** beta
    mc_samples: int = 20  # MC-dropout samples; used by power_bald only

    def __post_init__(self) -> None:
        _positive("strategy", beta=self.beta, mc_samples=self.mc_samples)


@dataclass
class DiversityConf(StrategyConf):
    """Core-set / BADGE: embedding-space selection, processed in chunks."""

    chunk_size: int = 8192

    def __post_init__(self) -> None:
        _positive("strategy", chunk_size=self.chunk_size)


@dataclass
class TypiclustConf(StrategyConf):
    """TypiClust: typical images of distinct clusters."""

    k_neighbors: int = 20
    max_clusters: int = 500

    def __post_init__(self) -> None:
        _positive("strategy", k_neighbors=self.k_neighbors, max_clusters=self.max_clusters)


# --------------------------------------------------------------------------- budget
INITIAL_SELECTIONS = ("random", "stratified", "typiclust")


@dataclass
class BudgetConf:
    """How many images are labelled: ``initial`` then ``rounds`` x ``query_size``."""

    name: str = "default"
    initial: int = 100
    query_size: int = 100
    rounds: int = 8
    initial_selection: str = "stratified"
    full: bool = False  # train once on the whole pool (the upper bound), no queries

    def __post_init__(self) -> None:
        if not self.full:
            _positive("budget", initial=self.initial, query_size=self.query_size)
            _non_negative("budget", rounds=self.rounds)
        if self.initial_selection not in INITIAL_SELECTIONS:
            raise ConfigError(
                f"budget.initial_selection must be one of {', '.join(INITIAL_SELECTIONS)}, "
                f"got {self.initial_selection!r}"
            )

    @property
    def total(self) -> int:
        """Images labelled by the end of the run."""
        return self.initial + self.rounds * self.query_size


# --------------------------------------------------------------------------- trainer
@dataclass
class TrainerConf:
    """Training and inference settings, identical for every strategy in a comparison."""

    epochs: int = 20
    min_steps: int = 100
    batch_size: int = 64
    eval_batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # cosine | constant
    reinit_each_round: bool = True
    class_weighted_loss: bool = False
    early_stopping_patience: int | None = None
    early_stopping_fraction: float = 0.2
    early_stopping_source: str = "labeled"  # labeled (a held-out slice) | val (the val split)
    device: str = "cpu"  # cpu | cuda | auto
    num_threads: int | None = None
    channels_last: bool = True

    def __post_init__(self) -> None:
        _positive("trainer", epochs=self.epochs, batch_size=self.batch_size,
                  eval_batch_size=self.eval_batch_size, lr=self.lr)
        _non_negative("trainer", min_steps=self.min_steps, weight_decay=self.weight_decay)
        if self.early_stopping_patience is not None:
            _positive("trainer", early_stopping_patience=self.early_stopping_patience)
        _fraction("trainer", low_open=True, early_stopping_fraction=self.early_stopping_fraction)
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(
                f"trainer.lr_schedule must be cosine or constant, got {self.lr_schedule!r}"
            )
        if self.early_stopping_source not in ("labeled", "val"):
            raise ConfigError("trainer.early_stopping_source must be labeled or val, "
                              f"got {self.early_stopping_source!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"trainer.device must be cpu, cuda or auto, got {self.device!r}")
        if self.num_threads is not None:
            _positive("trainer", num_threads=self.num_threads)


# --------------------------------------------------------------------------- tracking
@dataclass
class TrackingConf:
    """Where and how runs are logged (MLflow)."""

    enabled: bool = True
    uri: str | None = None  # None: sqlite:///<launch dir>/mlflow.db
    experiment: str = "al_sim"
    artifact_location: str | None = None  # None: <launch dir>/mlartifacts for new experiments
    query_grids: bool = True
    max_grid_images: int = 64
    retries: int = 5


# --------------------------------------------------------------------------- oracle
@dataclass
class OracleConf:
    """The simulated annotator."""

    noise_rate: float = 0.0

    def __post_init__(self) -> None:
        _fraction("oracle", noise_rate=self.noise_rate)


# --------------------------------------------------------------------------- top level
RESUME_MODES = ("auto", "true", "false")


@dataclass
class Config:
    """The whole run."""

    dataset: Any = MISSING
    model: Any = MISSING
    strategy: Any = MISSING
    budget: BudgetConf = MISSING
    trainer: TrainerConf = MISSING
    tracking: TrackingConf = MISSING
    oracle: OracleConf = field(default_factory=OracleConf)
    seed: int = 0
    progress: bool = True
    resume: str = "auto"  # auto | true | false (see README, "When things go wrong")


def register_configs() -> None:
    """Register every schema with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="dataset", name="schema_synthetic", node=SyntheticDatasetConf)
    cs.store(group="dataset", name="schema_medmnist", node=MedMNISTDatasetConf)
    cs.store(group="dataset", name="schema_folder", node=FolderDatasetConf)
    cs.store(group="model", name="schema_simple_cnn", node=SimpleCNNConf)
    cs.store(group="model", name="schema_resnet18", node=ResNet18Conf)
    cs.store(group="strategy", name="schema_strategy", node=StrategyConf)
    cs.store(group="strategy", name="schema_bald", node=BaldConf)
    cs.store(group="strategy", name="schema_power", node=PowerConf)
    cs.store(group="strategy", name="schema_diversity", node=DiversityConf)
    cs.store(group="strategy", name="schema_typiclust", node=TypiclustConf)
    cs.store(group="budget", name="schema_budget", node=BudgetConf)
    cs.store(group="trainer", name="schema_trainer", node=TrainerConf)
    cs.store(group="tracking", name="schema_tracking", node=TrackingConf)


def validate(cfg: DictConfig) -> None:
    """Run every schema's semantic checks; raises ConfigError naming the field."""
    for key in ("dataset", "model", "strategy", "budget", "trainer", "tracking", "oracle"):
        node = cfg[key]
        if OmegaConf.get_type(node) is dict:
            continue  # an untyped group (user-supplied); instantiate will check it
        OmegaConf.to_object(node)
    if str(cfg.resume).lower() not in RESUME_MODES:
        raise ConfigError(f"resume must be one of {', '.join(RESUME_MODES)}, got {cfg.resume!r}")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists keep their string form."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)
    return out


# --------------------------------------------------------------------------- compare (report)
# Schema of ``python -m al_sim.compare`` (conf/compare.yaml); owned by the comparison report.
@dataclass
class CompareConf:
    """The cross-run report: which runs, which metric, which target, where it goes.

    The store and experiment come from the ``tracking`` group, as for runs:
    ``tracking.experiment=...``, ``tracking.uri=...`` (or ``MLFLOW_TRACKING_URI``).
    """

    tracking: TrackingConf = MISSING
    sweep_id: str = "latest"  # latest | all | a sweep dir as given to Hydra | its parent run id
    metric: str = "test/accuracy"
    reference: str = "random"
    target_fraction: float = 0.95  # of the full-data baseline's final metric
    target_value: float | None = None  # an absolute target; wins over target_fraction
    alpha: float = 0.05
    output_dir: str | None = None  # None: <sweep dir>/compare, else ./al_sim_compare/<sweep>
    log_artifacts: bool = True

    def __post_init__(self) -> None:
        _fraction("compare", low_open=True, alpha=self.alpha)
        _positive("compare", target_fraction=self.target_fraction)
        if not self.metric.strip():
            raise ConfigError("compare.metric must name a logged metric, e.g. test/accuracy")


def register_compare_config() -> None:
    """Register the compare schema as ``compare_schema``, with the schemas it uses (idempotent)."""
    from hydra.core.config_store import ConfigStore

    register_configs()
    ConfigStore.instance().store(name="compare_schema", node=CompareConf)


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, re-raising al_sim's own errors as they are.

    Hydra wraps whatever a target raises; a user error from a loader must
    still reach the CLI as one clear line.
    """
    import hydra
    from hydra.errors import InstantiationException

    from al_sim.errors import ALSimError

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, ALSimError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
