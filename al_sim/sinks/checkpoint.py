"""Round checkpoints: written atomically after every round, read back to resume a run.

A checkpoint holds the labelled set, the oracle's state, the trained model,
the rounds done so far, every callback's own state (the MLflow run id) and,
when a human oracle paused the run, the selection that waits for labels.
Every other random part of a round is derived from ``seed`` and the round
number, so a resumed run ends exactly as an uninterrupted one would. This
module owns resuming: finding, checking and reading a checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from al_sim.core.events import (
    FINISHED,
    ALResult,
    FitReport,
    LoopState,
    PendingQuery,
    QueryRecord,
    RoundResult,
    RunCallback,
    RunInfo,
)
from al_sim.core.pool import LabelPool
from al_sim.data.base import ALDataset
from al_sim.runtime.errors import AlreadyFinishedError, ALSimError, ConfigError, DataError
from al_sim.runtime.files import atomic_write
from al_sim.tracking.contract import CHECKPOINT_FILE, results_neutral

FORMAT_VERSION = 3
log = logging.getLogger(__name__)


def fingerprint(flat_config: dict[str, str]) -> str:
    """A hash of the settings that determine a run's results."""
    kept = sorted((k, v) for k, v in flat_config.items() if not results_neutral(k))
    return hashlib.sha256(repr(kept).encode()).hexdigest()[:16]


def _differences(old: dict[str, str], new: dict[str, str]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<unset>')} -> {new.get(k, '<unset>')}" for k in keys
            if old.get(k) != new.get(k) and not results_neutral(k)]


_HASH_BLOCK_BYTES = 64 * 2**20  # rows hashed per block: a bounded temporary, whatever the pool


def _hash_rows(digest: Any, array: np.ndarray) -> None:
    """Feed ``array``'s bytes to ``digest`` a block of rows at a time, never copying it whole
    (a memory-mapped pool is read page by page, not into the process's memory)."""
    row = max(1, array[:1].nbytes)
    step = max(1, _HASH_BLOCK_BYTES // row)
    for start in range(0, len(array), step):
        digest.update(np.ascontiguousarray(array[start:start + step]).data.cast("B"))


def data_fingerprint(dataset: ALDataset) -> dict[str, Any]:
    """What a checkpoint's pool indices refer to: the pool's ids and a hash of its content."""
    digest = hashlib.sha256()
    for array in (dataset.pool_x.numpy(), dataset.pool_y, dataset.test_x.numpy(),
                  dataset.test_y):
        _hash_rows(digest, np.asarray(array))
    return {"n_pool": dataset.n_pool, "n_test": int(len(dataset.test_y)),
            "ids": list(dataset.pool_ids or []), "content": digest.hexdigest()[:16]}


def data_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    r"""The differences between two :func:`data_fingerprint`\ s, in words (empty if none)."""
    diff = []
    if old.get("n_pool") != new["n_pool"]:
        diff.append(f"the pool had {old.get('n_pool')} images, now {new['n_pool']}")
    if old.get("n_test") != new["n_test"]:
        diff.append(f"the test split had {old.get('n_test')} images, now {new['n_test']}")
    old_ids, new_ids = list(old.get("ids") or []), new["ids"]
    if old_ids != new_ids:
        gone = [i for i in old_ids if i not in set(new_ids)]
        added = [i for i in new_ids if i not in set(old_ids)]
        for what, ids in (("removed", gone), ("added", added)):
            if ids:
                more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
                diff.append(f"{what}: {', '.join(ids[:5])}{more}")
        if not gone and not added:
            diff.append("the pool's images are in another order")
    if not diff and old.get("content") != new["content"]:
        diff.append("the images or labels changed (content hash "
                    f"{old.get('content')} -> {new['content']})")
    return diff


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
                     "true_labels": t(q.true_labels),
                     "annotations": {k: t(v) for k, v in q.annotations.items()},
                     "flagged": None if q.flagged is None else t(q.flagged)}
                    for q in state.result.queries],  # the labels given are the pool's
        "rounds": [{"round": r.round, "n_labeled": r.n_labeled, "metrics": dict(r.metrics),
                    "train_s": r.train_s, "query_s": r.query_s, "eval_s": r.eval_s,
                    "fit": asdict(r.fit), "signals": dict(r.signals),
                    "costs": dict(r.costs), "agreement": dict(r.agreement)}
                   for r in state.result.rounds],
        "model": {k: v.detach().cpu() for k, v in state.model_state.items()},
        "pending": None if state.pending is None else {
            "round": state.pending.round, "indices": t(state.pending.indices),
            "scores": t(state.pending.scores), "query_s": state.pending.query_s},
    }


def _decode(data: dict[str, Any]) -> Checkpoint:
    pool = LabelPool.from_state({k: v.numpy() for k, v in data["pool"].items()})
    result = ALResult(
        rounds=[RoundResult(round=r["round"], n_labeled=r["n_labeled"], metrics=r["metrics"],
                            train_s=r["train_s"], query_s=r["query_s"],
                            fit=FitReport(**r["fit"]), eval_s=r["eval_s"],
                            signals=r.get("signals", {}), costs=r.get("costs", {}),
                            agreement=r.get("agreement", {}))
                for r in data["rounds"]],
        queries=[QueryRecord(round=q["round"], indices=q["indices"].numpy(),
                             scores=q["scores"].numpy(),
                             oracle_labels=pool.labels_of(q["indices"].numpy()),
                             true_labels=q["true_labels"].numpy(),
                             annotations={k: v.numpy()
                                          for k, v in q.get("annotations", {}).items()},
                             flagged=None if q.get("flagged") is None else q["flagged"].numpy())
                 for q in data["queries"]],
        n_annotated=int(data["oracle"]["n_annotated"]),
    )
    held = data.get("pending")
    pending = None if held is None else PendingQuery(
        round=int(held["round"]), indices=held["indices"].numpy(),
        scores=held["scores"].numpy(), query_s=float(held["query_s"]))
    state = LoopState(round=int(data["round"]), pool=pool, oracle=data["oracle"], result=result,
                      model_state=data["model"], callbacks=data["callbacks"], pending=pending)
    return Checkpoint(state, bool(data["finished"]), data["config"])


def serialise(checkpoint: Checkpoint) -> io.BytesIO:
    """``checkpoint`` as bytes: a snapshot, unaffected by later changes to the run's state."""
    buffer = io.BytesIO()
    torch.save(_encode(checkpoint.state, checkpoint.finished, checkpoint.config), buffer)
    return buffer


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically."""
    atomic_write(path, serialise(checkpoint).getbuffer())


def load(path: Path) -> Checkpoint:
    """Read a checkpoint (tensors and plain values only: ``weights_only=True``)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('version')}, expected {FORMAT_VERSION}")
        return _decode(data)
    except pickle.UnpicklingError as exc:  # torch's text advises weights_only=False: never
        raise ALSimError(
            f"cannot read the checkpoint {path} (not one al_sim wrote: it is damaged or holds "
            "objects other than tensors and plain values, which are not loaded); start over "
            "with resume=false or use a new output dir") from exc
    except Exception as exc:  # any unreadable content is the same problem to the user
        raise ALSimError(
            f"cannot read the checkpoint {path} ({type(exc).__name__}: {exc}); "
            "start over with resume=false or use a new output dir"
        ) from exc


def finished_with(path: Path, config: dict[str, str]) -> bool:
    """Whether the checkpoint at ``path`` is a finished run of ``config`` (its results'
    settings); False when it is not, or cannot be read. Its tensors are mapped, not read."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return (data.get("version") == FORMAT_VERSION and data.get("finished") is True
                and fingerprint(data["config"]) == fingerprint(config))
    except Exception:  # noqa: BLE001 - unreadable: the run itself says why
        return False


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
        raise AlreadyFinishedError(already_finished(run_dir))
    return checkpoint


def already_finished(run_dir: Path) -> str:
    """What a run whose run dir holds its finished run says instead of running."""
    return (f"the run in {run_dir} already finished; to run it again use resume=false "
            "or a new output dir")


class Checkpointer(RunCallback):
    """Saves a checkpoint after every round and marks it finished at the end.

    A round's checkpoint is serialised at once and written to disk (fsync included)
    on a background thread while the next round computes; each write waits for the
    one before, the run's end waits for the last, and a failed write fails the run
    there. The checkpoint also fingerprints the data its pool indices refer to; a
    resume on other data (images added, removed, changed) is refused.
    """

    key = "checkpoint"

    def __init__(self) -> None:
        self.path = Path(CHECKPOINT_FILE)
        self.config: dict[str, str] = {}
        self._last: LoopState | None = None
        self._data: dict[str, Any] = {}
        self._expected: dict[str, Any] | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._writing: Future | None = None

    def setup(self, run: RunInfo) -> None:
        self.path, self.config = Path(run.run_dir) / CHECKPOINT_FILE, run.params
        if run.resume is None:  # a stale checkpoint must not outlive a restart
            self.path.unlink(missing_ok=True)
        else:
            self._expected = run.resume.callbacks.get(self.key, {}).get("data")

    def on_run_start(self, dataset: ALDataset, rounds: int) -> None:
        self._data = data_fingerprint(dataset)
        if self._expected is None:
            return
        diff = data_differences(self._expected, self._data)
        if diff:
            raise DataError(
                f"the checkpoint in {self.path.parent} was made on other data "
                f"({'; '.join(diff)}): its labelled pool indices would point at other "
                "images; restore the data, or start over with resume=false or a new output dir"
            )

    def state_dict(self) -> dict:
        return {"data": self._data}

    def on_checkpoint(self, state: LoopState) -> None:
        self._last = state
        data = serialise(Checkpoint(state, False, self.config))
        self._wait()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="al_sim-checkpoint")
        self._writing = self._writer.submit(atomic_write, self.path, data.getbuffer())

    def _wait(self) -> None:
        """Wait for the checkpoint being written; raises its write error, if any."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def on_run_end(self, result: ALResult) -> None:
        self._wait()  # a failed write fails the run before the trackers call it finished

    def on_close(self, status: str) -> None:
        try:
            self._wait()
        except Exception as exc:
            if status != FINISHED:  # the run's own error is the one reported: say this too
                log.error("the last checkpoint could not be written to %s: %s", self.path, exc)
            raise
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None
        if status == FINISHED and self._last is not None:
            save(self.path, Checkpoint(self._last, True, self.config))
