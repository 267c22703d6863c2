"""A stack whose members train in lock-step (``hydra.launcher.lockstep=true``): each member is
its usual Hydra job in a thread of its own, and the threads take turns (one runs at a time, its
Hydra config and log handlers restored when it resumes). A member that reaches training or
scoring waits; when every live member waits, their rounds train together
(``core.lockstep.fit_lockstep``: one fused step for all) and their scorings of one source (the
pool for the strategies and the stop signals, the test set) run as one pass
(``core.stack_scoring.score_members``), then each goes on with its own outputs: its own
strategy, pool, sinks and checkpoint.

Members whose labelled counts differ, that hold out a validation split, or that lock-step
cannot train (``LockstepUnsupportedError``: another model class, fp16) train one by one; a
joint scoring pass that fails scores its members one by one. A member that fails (its strategy
raises, its scoring raises, its loss diverges) is that member's FAILED run; the others go on.
An interrupt of the stack (Ctrl-C, SIGTERM, its launcher gone) reaches the main thread only:
every member then raises it at its next turn, so each closes its own run KILLED, resumable, as
a run alone does.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus

from al_sim.app.lockstep_hook import JOIN, FitRequest, Request, ScoreRequest
from al_sim.core.events import FitReport
from al_sim.core.scoring import Output


def _context() -> tuple[Any, Any, list[logging.Handler], int]:
    root = logging.getLogger()
    return (HydraConfig.instance().cfg, JobRuntime.instance().conf, list(root.handlers),
            root.level)


def _restore(saved: tuple[Any, Any, list[logging.Handler], int]) -> None:
    root = logging.getLogger()
    HydraConfig.instance().cfg, JobRuntime.instance().conf = saved[0], saved[1]
    root.handlers[:] = saved[2]
    root.setLevel(saved[3])


class Rendezvous:
    """Turns between the member threads, and the lock-step round when all live ones wait."""

    def __init__(self, members: int) -> None:
        self._cv = threading.Condition()
        self._live = set(range(members))
        self._ready: set[int] = set()
        self._turn: int | None = None
        self._waiting: dict[int, Request] = {}
        self._done: dict[int, FitReport | Output | BaseException] = {}
        self._saved: dict[int, tuple[Any, Any, list[logging.Handler], int]] = {}
        self._stopped: str | None = None

    def stop(self, reason: str) -> None:
        """The stack was interrupted: no more joint rounds; each member raises
        ``KeyboardInterrupt(reason)`` in its own thread at its next turn."""
        with self._cv:  # after a joint round under way, which holds the lock
            self._stopped = reason
            self._cv.notify_all()

    def wait_all(self) -> None:
        """Until every member's job has ended (not ``Thread.join``: an interrupt there marks
        the thread it waited for as ended while it still runs, bpo-45274's fix in 3.11)."""
        with self._cv:
            while self._live:
                self._cv.wait()

    def _raise_if_stopped(self) -> None:
        if self._stopped is not None:
            raise KeyboardInterrupt(self._stopped)

    def take_turn(self, i: int) -> None:
        """Wait until it is member ``i``'s turn (the lowest ready index runs first)."""
        with self._cv:
            self._ready.add(i)
            while self._turn is not None or min(self._ready) != i:
                self._cv.wait()
            self._ready.discard(i)
            self._turn = i
        if i in self._saved:
            _restore(self._saved.pop(i))
        self._raise_if_stopped()  # in its own turn: its Hydra context and log handlers

    def _pass_turn(self, i: int) -> None:  # with the lock held
        self._turn = None
        if (self._stopped is None and self._waiting and set(self._waiting) == self._live
                and not self._ready):
            self._run_all()
        self._cv.notify_all()

    def join(self, i: int, request: Request) -> FitReport | Output:
        """Member ``i`` trains or scores: it waits for the others, then goes on with its own
        report or outputs."""
        self._raise_if_stopped()
        self._saved[i] = _context()
        with self._cv:
            self._waiting[i] = request
            self._pass_turn(i)
            while i not in self._done and self._stopped is None:
                self._cv.wait()
        self.take_turn(i)
        result = self._done.pop(i)
        if isinstance(result, BaseException):
            raise result
        return result

    def leave(self, i: int) -> None:
        """Member ``i``'s job ended (finished or failed): the stack goes on without it."""
        with self._cv:
            self._live.discard(i)
            if self._turn == i:
                self._pass_turn(i)
            else:
                self._cv.notify_all()

    def _run_all(self) -> None:
        """Every live member waits: the scorings first (those members go on, and reach
        training later), the trainings once every live member waits to train, so a member
        whose strategy asks nothing (random) still trains with the others."""
        scores = {i: r for i, r in self._waiting.items() if isinstance(r, ScoreRequest)}
        if scores:
            for i in scores:
                del self._waiting[i]
            self._score_all(scores)
            return
        fits: dict[int, FitRequest] = {i: r for i, r in self._waiting.items()
                                       if not isinstance(r, ScoreRequest)}
        self._waiting = {}
        self._train_all(fits)

    def _score_all(self, requests: dict[int, ScoreRequest]) -> None:
        """Members asking one source: one pass for all; alone, or when that pass fails, each
        member's own (its error its own)."""
        from al_sim.core.stack_scoring import describe, score_members
        from al_sim.core.training import Trainer

        groups: dict[tuple[int, str], list[int]] = {}
        for i, request in sorted(requests.items()):
            groups.setdefault(request.source.key, []).append(i)
        for ids in groups.values():
            reqs = [requests[i] for i in ids]
            asks = [(r.indices, r.need) for r in reqs]
            if len(ids) > 1:
                try:
                    outs = score_members(reqs[0].trainer, [r.model for r in reqs],
                                         reqs[0].source, asks)
                except Exception as exc:  # scored one by one below
                    print(f"lock-step: scoring together failed ({type(exc).__name__}: {exc}); "
                          f"{len(ids)} member(s) score one by one", file=sys.stderr, flush=True)
                else:
                    self._done.update(zip(ids, outs, strict=True))
                    needs = ", ".join(sorted({r.need.kind for r in reqs}))
                    print(f"lock-step: {len(ids)} member(s) scored together on "
                          f"{describe(reqs[0].source, asks)} ({needs})", file=sys.stderr,
                          flush=True)
                    continue
            for i, r in zip(ids, reqs, strict=True):
                try:
                    self._done[i] = Trainer.score(r.trainer, r.model, r.source, r.indices, r.need)
                except Exception as exc:  # that member's fault
                    self._done[i] = exc

    def _train_all(self, requests: dict[int, FitRequest]) -> None:
        """The waiting members' round: groups that can lock-step train together."""
        from al_sim.core.lockstep import LockstepUnsupportedError, fit_lockstep
        from al_sim.core.training import Trainer

        groups: dict[tuple[int, bool], list[int]] = {}
        for i, (_t, _m, _x, y, _n, _s, val) in sorted(requests.items()):
            groups.setdefault((len(y), val is not None), []).append(i)
        for (_count, has_val), ids in groups.items():
            reqs = [requests[i] for i in ids]
            try:
                if has_val or len(ids) == 1:
                    raise LockstepUnsupportedError("trained alone")
                reports = fit_lockstep(reqs[0][0], [r[1] for r in reqs], [r[2] for r in reqs],
                                       [r[3] for r in reqs], reqs[0][4], [r[5] for r in reqs])
                self._done.update(zip(ids, reports, strict=True))
                print(f"lock-step: {len(ids)} member(s) trained together on {_count} labelled",
                      file=sys.stderr, flush=True)
            except LockstepUnsupportedError:
                for i, (trainer, model, x, y, n, seed, val) in zip(ids, reqs, strict=True):
                    try:
                        self._done[i] = Trainer.fit(trainer, model, x, y, n, seed, val)
                    except Exception as exc:  # that member's fault
                        self._done[i] = exc
            except Exception as exc:  # a fault of the lock-stepped round: each member's error
                self._done.update((i, exc) for i in ids)


def run_lockstep(members: list[tuple[int, int, list[str]]],
                 execute: Callable[[int, list[str]], JobReturn]) -> list[tuple[int, JobReturn]]:
    """Each member ``(index, job number, overrides)`` run by ``execute`` in its own thread,
    trainings in lock-step; the members' job returns. Interrupted, the members close their
    runs, then the interrupt goes on up."""
    rendezvous = Rendezvous(len(members))
    results: dict[int, JobReturn] = {}

    def member(k: int, num: int, overrides: list[str]) -> None:
        JOIN.set(lambda request: rendezvous.join(k, request))
        try:
            rendezvous.take_turn(k)
            results[k] = execute(num, overrides)
        except BaseException as exc:  # Hydra's failure around the task, or the interrupt
            results[k] = JobReturn(status=JobStatus.FAILED, _return_value=exc)
        finally:
            rendezvous.leave(k)

    threads = [threading.Thread(target=member, args=(k, num, overrides), daemon=True,
                                name=f"al_sim-member-{k}")
               for k, (_i, num, overrides) in enumerate(members)]
    for thread in threads:
        thread.start()
    try:
        rendezvous.wait_all()
    except BaseException as exc:  # in the main thread: Ctrl-C, SIGTERM, the launcher gone
        rendezvous.stop(str(exc) or type(exc).__name__)
        rendezvous.wait_all()
        raise
    for thread in threads:
        thread.join()  # past their last step
    return [(i, results[k]) for k, (i, _num, _o) in enumerate(members)]
