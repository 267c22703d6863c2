"""A run's batches by round (ordered by the number: ``round_100`` after ``round_99``), and
batches that no longer apply set aside with their answers, never deleted. Torch-free.

``<run dir>/labels/set_aside/<round folder>-<UTC time>/``: a batch the run
replaced (its selection changed: ``resume=false``, a lost checkpoint) or could
not read, kept whole when it holds any answer.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from al_sim.label.batch import LABELS_DIR, META_FILE, Batch
from al_sim.label.locks import ServerLock
from al_sim.runtime.errors import DataError

SET_ASIDE_DIR = "set_aside"
_ROUND = re.compile(r"round_(\d+)")


def round_folders(run_dir: Path) -> list[tuple[int, Path]]:
    """``(round, folder)`` of every ``labels/round_N`` folder, by round number."""
    root = Path(run_dir) / LABELS_DIR
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := _ROUND.fullmatch(p.name))] if root.is_dir() else []
    return sorted(found)


def all_batches(run_dir: Path) -> list[Batch]:
    """Every written batch of the run, by round."""
    return [Batch.load(p) for _, p in round_folders(run_dir) if (p / META_FILE).is_file()]


def current_batch(run_dir: Path) -> Batch:
    """The run's latest batch; DataError when there is none."""
    found = [p for _, p in round_folders(run_dir) if (p / META_FILE).is_file()]
    if not found:
        raise DataError(f"{run_dir} has no query batch to label ({LABELS_DIR}/round_XX/); run "
                        "python -m al_sim.run oracle=human ... first, and pass its run dir")
    return Batch.load(found[-1])


def holds_answers(folder: Path) -> bool:
    """Whether ``folder``'s ``answers.csv`` has any row (an unreadable one counts as yes)."""
    path = Batch(folder, 0, [], []).answers_path
    if not path.exists():
        return False
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return True
    return len([line for line in text.splitlines() if line.strip()]) > 1


def set_aside(folder: Path, why: str) -> str | None:
    """Remove a batch folder that no longer applies; one holding answers is moved to
    ``labels/set_aside/`` instead. Returns what was done, in words (None: nothing to keep)."""
    ServerLock(folder).check_free()
    if not holds_answers(folder):
        shutil.rmtree(folder)
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = folder.parent / SET_ASIDE_DIR / f"{folder.name}-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = folder.parent / SET_ASIDE_DIR / f"{folder.name}-{stamp}-{n}"
    target.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(target)
    return (f"the earlier {folder.name} batch ({why}) holds an expert's answers: kept in "
            f"{target}")
