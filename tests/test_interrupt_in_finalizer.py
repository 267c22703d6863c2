"""A stop signal that lands in a finalizer (garbage collection, a weakref callback) is not
lost: Python drops exceptions raised there, so it is raised again in the main thread."""

from __future__ import annotations

import signal
import time

import pytest

from al_sim.runtime.interrupts import interrupt


class Collected:
    """An object whose finalizer runs while the signal arrives (as SQLAlchemy's did)."""

    def __del__(self) -> None:
        interrupt("SIGTERM")  # what the SIGTERM handler does, here inside the finalizer


def test_an_interrupt_raised_in_a_finalizer_reaches_the_main_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    saved = signal.signal(signal.SIGINT, lambda signum, frame: interrupt("Ctrl-C"))
    try:
        with pytest.raises(KeyboardInterrupt, match="^SIGTERM$"):
            Collected()  # dropped at once: its finalizer raises, Python ignores it
            for _ in range(200):  # the main code goes on: the stop must still reach it
                time.sleep(0.005)
    finally:
        signal.signal(signal.SIGINT, saved)
    assert "Exception ignored" not in capsys.readouterr().err


def test_importing_al_sim_leaves_pythons_unraisable_hook_alone() -> None:
    """The hook is installed by the first interrupt, in a process whose handlers call
    ``interrupt``; a program that only imports al_sim keeps its own."""
    import subprocess
    import sys

    code = ("import sys, al_sim.run, al_sim.compare, al_sim.runtime.interrupts as i; "
            "assert sys.unraisablehook is sys.__unraisablehook__; "
            "i._guard_finalizers(); assert sys.unraisablehook is i._unraisable")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
