"""Schemas of the run: budget, trainer, tracking, oracle and the top level; the compare report.

Config-object groups (these, and ``al_sim.config.data``) are validated by their
dataclasses; groups that build a class (``strategy``, ``model``, ``callbacks``)
take their schema from the class's constructor (``al_sim.config.derive``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from al_sim.config.checks import finite, fraction, non_negative, positive, set_default
from al_sim.maths.stop_signals import StopRuleError, parse_rules
from al_sim.runtime.errors import ConfigError
from al_sim.tracking.contract import AUTO_METRIC, TEST_KEYS


# --------------------------------------------------------------------------- budget
class InitialSelection(Enum):
    """How the initial labelled set is drawn (policies: ``al_sim.strategies.initial``)."""

    random = "random"
    stratified = "stratified"
    typiclust = "typiclust"


@dataclass
class BudgetConf:
    """How many images are labelled: ``initial`` then ``rounds`` x ``query_size``."""

    name: str = "default"
    initial: int = 100
    query_size: int = 100
    rounds: int = 8
    initial_selection: InitialSelection = InitialSelection.stratified
    full: bool = False  # train once on the whole pool (the upper bound), no queries
    stop_when: str | None = None  # e.g. "kappa>=0.99": end the run early (maths.stop_signals)
    stop_set_size: int = 500  # the fixed random pool subset the stopping signals are computed on
    stop_window: int = 3  # rounds averaged (kappa) or compared (plateau)
    stop_metric: str = "test/balanced_accuracy"  # the metric the plateau signal watches
    cost_limit: float | None = None  # expert seconds: stop before a round would exceed them

    def __post_init__(self) -> None:
        if self.cost_limit is not None:
            positive("budget", cost_limit=self.cost_limit)
        if not self.full:
            positive("budget", initial=self.initial, query_size=self.query_size)
            non_negative("budget", rounds=self.rounds)
        positive("budget", stop_set_size=self.stop_set_size, stop_window=self.stop_window)
        if self.stop_metric not in TEST_KEYS:
            raise ConfigError(f"budget.stop_metric must be one of {', '.join(TEST_KEYS)}, "
                              f"got {self.stop_metric!r}; "
                              f"{set_default('budget', self, 'stop_metric')}")
        if self.stop_when is not None and self.stop_when.strip():
            try:
                parse_rules(self.stop_when)
            except StopRuleError as exc:
                raise ConfigError(f"budget.stop_when: {exc}") from None


# --------------------------------------------------------------------------- trainer
EVAL_DEVICES = ("cpu", "cuda")  # what an eval_batch_table key starts with

@dataclass
class TrainerConf:
    """Training and inference settings, identical for every strategy in a comparison."""

    epochs: int = 20
    min_steps: int = 100
    batch_size: int = 64
    eval_batch_size: Any = "auto"  # a number, or auto: eval_batch_table
    # auto: the first key of <device>-<Model>-<px>, <device>-<Model>, <device> (measured)
    eval_batch_table: dict[str, int] = field(default_factory=lambda: {
        "cpu": 64, "cpu-3d": 8, "cuda": 1024, "cuda-SimpleCNN": 4096, "cuda-ResNet18-28": 4096})
    # inference batches are also capped so that one holds at most this many MB of activations
    inference_memory_mb: float | None = 1024.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # cosine | constant
    reinit_each_round: bool = True
    class_weighted_loss: bool = False
    early_stopping_patience: int | None = None
    early_stopping_fraction: float = 0.2
    early_stopping_source: str = "labeled"  # labeled (a held-out slice) | val (the val split)
    device: str = "auto"  # cpu | cuda | auto
    num_threads: int | None = None
    omp_wait_policy: str | None = "passive"  # OpenMP threads waiting: passive | active | None
    channels_last: bool = True
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a grad scaler, CUDA only)
    deterministic: bool = True  # CUDA: deterministic kernels, same seed => same results
    resident_memory_fraction: float = 0.5  # data go to the GPU when <= this share of free memory
    fused_normalise: bool = False  # one multiply-add for uint8 -> normalised float
    mapped_pool_mmap_threshold_mb: float | None = 1.0  # see conf/trainer/default.yaml
    memory_limit_fraction: float | None = 0.9  # a CPU run's memory cap: this share of the RAM

    def __post_init__(self) -> None:
        positive("trainer", epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)
        if self.eval_batch_size != "auto":
            if isinstance(self.eval_batch_size, bool) or not isinstance(self.eval_batch_size, int):
                raise ConfigError("trainer.eval_batch_size must be auto or a number > 0, got "
                                  f"{self.eval_batch_size!r}; "
                                  f"{set_default('trainer', self, 'eval_batch_size')}")
            positive("trainer", eval_batch_size=self.eval_batch_size)
        for key, value in self.eval_batch_table.items():
            if key.split("-")[0] not in EVAL_DEVICES:
                raise ConfigError(f"trainer.eval_batch_table key {key!r} must start with "
                                  f"{' or '.join(EVAL_DEVICES)} (<device>[-<Model>[-<px>]])")
            positive("trainer", **{f"eval_batch_table.{key}": value})
        if self.inference_memory_mb is not None:
            positive("trainer", inference_memory_mb=self.inference_memory_mb)
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"trainer.precision must be fp32, bf16 or fp16, got "
                              f"{self.precision!r}; {set_default('trainer', self, 'precision')}")
        fraction("trainer", low_open=True, resident_memory_fraction=self.resident_memory_fraction)
        cap = self.memory_limit_fraction
        if cap is not None and (isinstance(cap, bool) or not 0.0 < cap <= 1.0):
            raise ConfigError(f"trainer.memory_limit_fraction must be in (0, 1] (or null: no "
                              f"cap), got {cap}; "
                              f"{set_default('trainer', self, 'memory_limit_fraction')}")
        if self.batch_size < 2:  # batch norm cannot train on one image: every step skipped
            raise ConfigError(f"trainer.batch_size must be >= 2 (batch norm trains on batches), "
                              f"got {self.batch_size}; set trainer.batch_size=32")
        non_negative("trainer", min_steps=self.min_steps, weight_decay=self.weight_decay)
        if self.early_stopping_patience is not None:
            positive("trainer", early_stopping_patience=self.early_stopping_patience)
        fraction("trainer", low_open=True, early_stopping_fraction=self.early_stopping_fraction)
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(
                f"trainer.lr_schedule must be cosine or constant, got {self.lr_schedule!r}; "
                f"{set_default('trainer', self, 'lr_schedule')}"
            )
        if self.early_stopping_source not in ("labeled", "val"):
            raise ConfigError("trainer.early_stopping_source must be labeled or val, "
                              f"got {self.early_stopping_source!r}; "
                              f"{set_default('trainer', self, 'early_stopping_source')}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"trainer.device must be cpu, cuda or auto, got {self.device!r}; "
                              f"{set_default('trainer', self, 'device')}")
        if self.num_threads is not None:
            positive("trainer", num_threads=self.num_threads)
        if self.omp_wait_policy not in (None, "passive", "active"):
            raise ConfigError("trainer.omp_wait_policy must be passive, active or null (the "
                              f"OpenMP library's default), got {self.omp_wait_policy!r}; "
                              f"{set_default('trainer', self, 'omp_wait_policy')}")
        if self.mapped_pool_mmap_threshold_mb is not None:
            positive("trainer", mapped_pool_mmap_threshold_mb=self.mapped_pool_mmap_threshold_mb)


# --------------------------------------------------------------------------- tracking
DEFAULT_EXPERIMENT = "al_sim"  # single runs; a sweep left at it logs into one named after it
@dataclass
class TrackingConf:
    """Where and how runs are logged (MLflow)."""

    enabled: bool = True
    uri: str | None = None  # None: sqlite:///<launch dir>/mlflow.db
    experiment: str = DEFAULT_EXPERIMENT  # a sweep left at it gets its own (its sweep dir)
    artifact_location: str | None = None  # None: <launch dir>/mlartifacts for new experiments
    query_grids: bool = True
    max_grid_images: int = 64
    retries: int = 20  # retries of one call while the store is locked/unreachable/restarting
    retry_timeout_s: float = 180.0  # ... and at most this long; then the run ends (resumable)
    backoff_max_s: float = 10.0  # the longest wait between two retries
    connect_wait_s: float = 30.0  # how long a starting run waits for an unreachable server
    http_timeout: float = 10.0  # seconds an http(s) server has to answer each request
    ui_port: int | None = None  # the printed `mlflow ui` command's port; None: one free now

    def __post_init__(self) -> None:
        if not str(self.experiment).strip():
            raise ConfigError(f"tracking.experiment must be a name, got {self.experiment!r}; "
                              f"{set_default('tracking', self, 'experiment')}")
        positive("tracking", max_grid_images=self.max_grid_images, http_timeout=self.http_timeout,
                 retry_timeout_s=self.retry_timeout_s, backoff_max_s=self.backoff_max_s)
        non_negative("tracking", retries=self.retries, connect_wait_s=self.connect_wait_s)
        if self.ui_port is not None and not 0 < self.ui_port < 65536:
            raise ConfigError(f"tracking.ui_port must be a port number 1..65535 (or null: a "
                              f"free one from 5000), got {self.ui_port}; "
                              f"{set_default('tracking', self, 'ui_port')}")


# --------------------------------------------------------------------------- oracle
ORACLES = ("simulated", "human")  # oracle=panel has its own schema (config/annotators.py)


@dataclass
class OracleConf:
    """Who labels the queried images: ``simulated`` (the pool's labels) or ``human`` (an expert).

    ``noise_rate``: the simulated annotator gives a wrong class to this share of its answers.
    ``image_size``: the human oracle shows images smaller than this enlarged to it (pixels).
    """

    name: str = "simulated"
    noise_rate: float = 0.0
    image_size: int = 256

    def __post_init__(self) -> None:
        fraction("oracle", noise_rate=self.noise_rate)
        positive("oracle", image_size=self.image_size)
        if self.name not in ORACLES:
            raise ConfigError(f"oracle.name must be one of {', '.join(ORACLES)}, got "
                              f"{self.name!r} (choose the group: oracle=simulated|human|panel)")
        if self.name == "human" and self.noise_rate:
            raise ConfigError("oracle.noise_rate simulates annotation errors; a human oracle "
                              "makes its own: drop oracle.noise_rate with oracle=human")


# --------------------------------------------------------------------------- top level
RESUME_MODES = ("auto", "true", "false")


@dataclass
class Config:
    """The whole run."""

    dataset: Any = MISSING
    model: Any = MISSING
    strategy: Any = MISSING
    callbacks: Any = MISSING
    budget: BudgetConf = MISSING
    trainer: TrainerConf = MISSING
    tracking: TrackingConf = MISSING
    oracle: Any = MISSING  # OracleConf, or PanelOracleConf for oracle=panel
    seed: int = 0
    progress: bool = True
    resume: str = "auto"  # auto | true | false (see README, "When things go wrong")


# --------------------------------------------------------------------------- compare (report)
X_LABELS, X_EXPERT = "labels", "expert_seconds"  # compare's x axes: labelled images, expert time
# Schema of ``python -m al_sim.compare`` (conf/compare.yaml); owned by the comparison report.
@dataclass
class CompareConf:
    """The cross-run report: which runs, which metric, which target, where it goes.

    The store and experiment come from the ``tracking`` group, as for runs:
    ``tracking.experiment=...``, ``tracking.uri=...`` (or ``MLFLOW_TRACKING_URI``).
    """

    tracking: TrackingConf = MISSING
    sweep_id: str = "latest"  # latest | all | a sweep dir as given to Hydra | its parent run id
    # auto: the task's primary metric, balanced accuracy (ignoring a rare class does not pay)
    # or for multi-label runs the macro AUROC over findings
    metric: str = AUTO_METRIC
    reference: str = "random"
    target_fraction: float = 0.95  # of the full-data baseline's final metric
    target_value: float | None = None  # an absolute target; wins over target_fraction
    alpha: float = 0.05
    output_dir: str | None = None  # None: <sweep dir>/compare, else ./al_sim_compare/<sweep>
    log_artifacts: bool = True
    stop_rules: list[str] = field(default_factory=list)  # e.g. ["kappa>=0.99", "plateau<0.005"]
    x: str = X_LABELS  # also draw curves against expert_seconds (runs with oracle=panel)

    def __post_init__(self) -> None:
        fraction("compare", low_open=True, alpha=self.alpha)
        if self.x not in (X_LABELS, X_EXPERT):
            raise ConfigError(f"x must be {X_LABELS} or {X_EXPERT}, got {self.x!r}")
        for text in self.stop_rules:
            try:
                parse_rules(text)
            except StopRuleError as exc:
                raise ConfigError(f"compare.stop_rules: {exc}") from None
        positive("compare", target_fraction=self.target_fraction)
        if self.target_value is not None:  # nan: "labels to target" would never be reached
            finite("compare", target_value=self.target_value)
        if not self.metric.strip():
            raise ConfigError("compare.metric must name a logged metric, e.g. test/accuracy")
