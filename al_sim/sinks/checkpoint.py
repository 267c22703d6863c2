"""Round checkpoints: written atomically after every round, read back to resume a run.

A checkpoint holds the labelled set, the oracle's state, the trained model,
the rounds done so far and every callback's own state (the MLflow run id).
Every other random part of a round is derived from ``seed`` and the round
number, so a resumed run ends exactly as an uninterrupted one would. This
module owns resuming: finding, checking and reading a checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from al_sim.contract import results_neutral
from al_sim.core.pool import LabelPool
from al_sim.errors import AlreadyFinishedError, ALSimError, ConfigError
from al_sim.events import (
    FINISHED,
    ALResult,
    Callback,
    FitReport,
    LoopState,
    QueryRecord,
    RoundResult,
    RunInfo,
)

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 2


def fingerprint(flat_config: dict[str, str]) -> str:
    """A hash of the settings that determine a run's results."""
    kept = sorted((k, v) for k, v in flat_config.items() if not results_neutral(k))
    return hashlib.sha256(repr(kept).encode()).hexdigest()[:16]


def _differences(old: dict[str, str], new: dict[str, str]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<unset>')} -> {new.get(k, '<unset>')}" for k in keys
            if old.get(k) != new.get(k) and not results_neutral(k)]


@dataclass
class Checkpoint:
    """A saved run state (see module docstring)."""

    state: LoopState
    finished: bool
    config: dict[str, str]


def _encode(state: LoopState, finished: bool, config: dict[str, str]) -> dict[str, Any]:
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return {
        "version": FORMAT_VERSION, "finished": finished, "config": config,
        "callbacks": state.callbacks,
        "round": state.round,
        "pool": {k: t(v) for k, v in state.pool.state().items()},
        "oracle": state.oracle,
        "queries": [{"round": q.round, "indices": t(q.indices), "scores": t(q.scores),
                     "oracle_labels": t(q.oracle_labels), "true_labels": t(q.true_labels)}
                    for q in state.result.queries],
        "rounds": [{"round": r.round, "n_labeled": r.n_labeled, "metrics": dict(r.metrics),
                    "train_s": r.train_s, "query_s": r.query_s, "eval_s": r.eval_s,
                    "fit": asdict(r.fit), "signals": dict(r.signals)}
                   for r in state.result.rounds],
        "n_annotated": state.result.n_annotated,
        "model": {k: v.detach().cpu() for k, v in state.model_state.items()},
    }


def _decode(data: dict[str, Any]) -> Checkpoint:
    result = ALResult(
        rounds=[RoundResult(r["round"], r["n_labeled"], r["metrics"], r["train_s"],
                            r["query_s"], FitReport(**r["fit"]), r["eval_s"],
                            r.get("signals", {}))
                for r in data["rounds"]],
        queries=[QueryRecord(q["round"], q["indices"].numpy(), q["scores"].numpy(),
                             q["oracle_labels"].numpy(), q["true_labels"].numpy())
                 for q in data["queries"]],
        n_annotated=int(data["n_annotated"]),
    )
    pool = LabelPool.from_state({k: v.numpy() for k, v in data["pool"].items()})
    state = LoopState(int(data["round"]), pool, data["oracle"], result, data["model"],
                      data["callbacks"])
    return Checkpoint(state, bool(data["finished"]), data["config"])


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    payload = _encode(checkpoint.state, checkpoint.finished, checkpoint.config)
    with tmp.open("wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> Checkpoint:
    """Read a checkpoint (tensors and plain values only: ``weights_only=True``)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('version')}, expected {FORMAT_VERSION}")
        return _decode(data)
    except Exception as exc:  # any unreadable content is the same problem to the user
        raise ALSimError(
            f"cannot read the checkpoint {path} ({type(exc).__name__}: {exc}); "
            "start over with resume=false or use a new output dir"
        ) from exc


def find_resumable(run_dir: Path, mode: str, config: dict[str, str]) -> Checkpoint | None:
    """The checkpoint to continue from, per ``resume`` mode ``auto``/``true``/``false``.

    Raises when the run there is finished, or was made with a different config.
    """
    path = run_dir / CHECKPOINT_FILE
    if mode == "false" or not path.exists():
        if mode == "true":
            raise ConfigError(f"resume=true but {path} does not exist: nothing to resume")
        return None
    checkpoint = load(path)
    if fingerprint(checkpoint.config) != fingerprint(config):
        diff = _differences(checkpoint.config, config)
        raise ConfigError(
            f"{run_dir} holds a run made with a different config ({'; '.join(diff[:5])}); "
            "resume it with the same settings, or start over with resume=false "
            "or a new output dir"
        )
    if checkpoint.finished:
        raise AlreadyFinishedError(
            f"the run in {run_dir} already finished; to run it again use resume=false "
            "or a new output dir"
        )
    return checkpoint


class Checkpointer(Callback):
    """Saves a checkpoint after every round and marks it finished at the end."""

    def __init__(self) -> None:
        self.path = Path(CHECKPOINT_FILE)
        self.config: dict[str, str] = {}
        self._last: LoopState | None = None

    def setup(self, run: RunInfo) -> None:
        self.path, self.config = Path(run.run_dir) / CHECKPOINT_FILE, run.params
        if run.resume is None:  # a stale checkpoint must not outlive a restart
            self.path.unlink(missing_ok=True)

    def on_checkpoint(self, state: LoopState) -> None:
        self._last = state
        save(self.path, Checkpoint(state, False, self.config))

    def on_close(self, status: str) -> None:
        if status == FINISHED and self._last is not None:
            save(self.path, Checkpoint(self._last, True, self.config))
