"""The parent MLflow run of the sweep this process is launching, while it is open.

Hydra builds the sweep callback and the launcher apart, so the launching process holds the
one fact they share here: :class:`~al_sim.app.sweep_callback.SweepCallback` opens and closes
it; the launchers find a lost job's run under it (:mod:`al_sim.app.lost_jobs`), and the entry
point's interrupt and failure handlers end it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SweepParent:
    """A sweep's parent run: where it is and its id."""

    uri: str
    run_id: str


_OPEN: list[SweepParent] = []  # none, or the one open in this process


def open_parent(uri: str, run_id: str) -> SweepParent:
    """The sweep's parent run, now open in this process."""
    _OPEN[:] = [SweepParent(uri, run_id)]
    return _OPEN[0]


def open_sweep() -> SweepParent | None:
    """The parent run of the sweep open in this process (None: no sweep, or tracking off)."""
    return _OPEN[0] if _OPEN else None


def close_parent() -> SweepParent | None:
    """Forget the open parent run (its closing is the caller's); the one that was open."""
    was = open_sweep()
    _OPEN.clear()
    return was
