"""Multi-label image folders: images plus a manifest CSV naming each image's findings.

Two layouts, told apart by the header:

* ChestX-ray14 (``Data_Entry_2017.csv``): ``Image Index`` (a file name) and
  ``Finding Labels`` (findings joined by ``|``, or ``No Finding``); other columns
  (patient, view, ...) are ignored;
* plain: ``file`` and one 0/1 column per finding (an optional ``No Finding``
  column must be 0 where a finding is 1).

A bare file name lives in ``<root>/<images_dir>/``; a name with ``/`` is relative
to the root. An optional ``split`` column puts a row in the ``initial`` labelled
set, the ``test`` split or (anything else) the pool; without it,
``dataset.test_fraction`` holds out part of the pool. Every problem is reported
by line and file name, in one DataError.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path, PurePosixPath

import numpy as np

from al_sim.config.data import FolderDatasetConf
from al_sim.data.base import ALDataset
from al_sim.data.folder import listing, read_images
from al_sim.data.sources import sources
from al_sim.maths.sampling import stratified_sample
from al_sim.maths.task import LABEL_SEPARATOR, NO_FINDING, Task, TaskType
from al_sim.runtime.errors import DataError

XRAY14 = ("Image Index", "Finding Labels")
PLAIN_FILE, SPLIT = "file", "split"
INITIAL, TEST = "initial", "test"


def _read_rows(path: Path, name: str) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise DataError(f"{path} not found: dataset.manifest must name a CSV under "
                        "dataset.root listing every image with its findings")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not UTF-8 text (offset {exc.start}); "
                        "save it as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise DataError(f"{name} is not a valid CSV ({exc})") from None
    return list(reader.fieldnames or []), rows


Findings = list[set[str] | None]  # per row: its findings, or None when not labelled yet


def _xray14(rows: list[dict[str, str]], known: list[str] | None,
            problems: list[str]) -> tuple[list[str], list[str], Findings]:
    files: list[str] = []
    sets: Findings = []
    unknown, both = [], []
    for line, row in enumerate(rows, start=2):
        cell = (row[XRAY14[1]] or "").strip()
        files.append((row[XRAY14[0]] or "").strip())
        if not cell:  # not labelled yet (an expert labels it: oracle=human)
            sets.append(None)
            continue
        names = {n.strip() for n in cell.split(LABEL_SEPARATOR) if n.strip()}
        if NO_FINDING in names and len(names) > 1:
            both.append(f"line {line}: {cell!r}")
        names.discard(NO_FINDING)
        if known is not None:
            unknown += [f"line {line}: {n!r}" for n in sorted(names - set(known))]
        sets.append(names)
    if unknown:
        problems.append(f"unknown finding(s) (dataset.findings: {', '.join(known or [])}): "
                        f"{listing(unknown)}; add them to dataset.findings or fix the rows")
    if both:
        problems.append(f"row(s) with both {NO_FINDING!r} and a finding: {listing(both)}; "
                        f"keep {NO_FINDING!r} only for images without findings")
    findings = known if known is not None else sorted(set().union(*(s for s in sets if s)))
    return findings, files, sets


def _plain(header: list[str], rows: list[dict[str, str]], known: list[str] | None,
           problems: list[str]) -> tuple[list[str], list[str], Findings]:
    columns = [c for c in header if c not in (PLAIN_FILE, SPLIT, NO_FINDING)]
    if known is not None:
        unknown = [c for c in columns if c not in known]
        missing = [c for c in known if c not in columns]
        if unknown:
            problems.append(f"unknown finding column(s) {listing(unknown)} (dataset.findings: "
                            f"{', '.join(known)}); add them to dataset.findings or drop them")
        if missing:
            problems.append(f"no column for finding(s) {listing(missing)}")
    files: list[str] = []
    sets: Findings = []
    bad, both = [], []
    for line, row in enumerate(rows, start=2):
        files.append((row[PLAIN_FILE] or "").strip())
        if not any((row[c] or "").strip() for c in columns):  # not labelled yet
            sets.append(None)
            continue
        names = set()
        for c in columns:
            value = (row[c] or "").strip()
            if value not in ("0", "1"):
                bad.append(f"line {line} {c}={value!r}")
            elif value == "1":
                names.add(c)
        if (row.get(NO_FINDING) or "").strip() == "1" and names:
            both.append(f"line {line}")
        sets.append(names)
    if bad:
        problems.append(f"finding cells must be 0 or 1: {listing(bad)}")
    if both:
        problems.append(f"row(s) with both {NO_FINDING!r}=1 and a finding: {listing(both)}")
    return (known if known is not None else columns), files, sets


def _paths(files: list[str], root: Path, images_dir: str, problems: list[str]) -> list[Path]:
    paths, missing, outside, seen, twice = [], [], [], set(), []
    for file in files:
        rel = PurePosixPath(file if "/" in file else f"{images_dir}/{file}")
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            outside.append(file)
        elif not path.is_file():
            missing.append(rel.as_posix())
        if path in seen:
            twice.append(file)
        seen.add(path)
        paths.append(path)
    if missing:
        problems.append(f"{len(missing)} listed image(s) not found: {listing(missing)}")
    if outside:
        problems.append(f"file(s) outside dataset.root: {listing(outside)}")
    if twice:
        problems.append(f"image(s) listed twice: {listing(twice)}")
    return paths


def load_manifest(conf: FolderDatasetConf, root: Path) -> ALDataset:
    """The multi-label dataset a manifest folder describes (see the module doc)."""
    name = str(conf.manifest)
    header, rows = _read_rows(root / name, name)
    problems: list[str] = []
    known = None if conf.findings is None else list(conf.findings)
    if set(XRAY14) <= set(header):
        findings, files, sets = _xray14(rows, known, problems)
    elif PLAIN_FILE in header:
        findings, files, sets = _plain(header, rows, known, problems)
    else:
        raise DataError(f"{name} must have the header of ChestX-ray14 ({', '.join(XRAY14)}) "
                        f"or a plain one (file plus one 0/1 column per finding), got "
                        f"{','.join(header)[:200]!r}")
    if not rows:
        problems.append("no rows")
    paths = _paths(files, root, conf.images_dir, problems)
    if not findings and not problems:
        problems.append("no finding is named anywhere; list them in dataset.findings")
    if problems:
        raise DataError(f"{name}: " + "; ".join(problems))
    y = np.array([[-1] * len(findings) if s is None else [int(f in s) for f in findings]
                  for s in sets], dtype=np.int64).reshape(len(sets), len(findings))
    task = Task.of(TaskType.multilabel, findings)
    split = np.array([(r.get(SPLIT) or "").strip().lower() for r in rows])
    unlabelled = [f"line {k + 2}" for k, s in enumerate(sets)
                  if s is None and split[k] in (TEST, INITIAL)]
    if unlabelled:
        raise DataError(f"{name}: {len(unlabelled)} test or initial row(s) have no "
                        f"findings: {listing(unlabelled)}; write {NO_FINDING!r} for an image "
                        "without findings (only pool rows may wait for an expert)")
    test = split == TEST
    if not test.any():
        if conf.test_fraction is None:
            raise DataError(f"{name} has no test rows: add a {SPLIT} column (initial | pool | "
                            "test), or set dataset.test_fraction=0.2 to hold out part of the pool")
        candidates = np.flatnonzero((split != INITIAL) & task.known(y))
        n_test = max(1, round(conf.test_fraction * len(candidates)))
        held = stratified_sample(task.strata(y[candidates]), n_test,
                                 np.random.default_rng(conf.seed))
        test[candidates[held]] = True
    initial = np.flatnonzero(split == INITIAL)
    pool = np.concatenate([initial, np.flatnonzero(~test & (split != INITIAL))])
    test_idx = np.flatnonzero(test)
    size, channels = conf.image_size, conf.channels
    read_from = sources([root / name, *(paths[i] for i in (*pool, *test_idx))])
    return ALDataset(
        name=conf.name,
        pool_x=read_images([paths[i] for i in pool], root, size, channels, conf.window),
        pool_y=y[pool],
        test_x=read_images([paths[i] for i in test_idx], root, size, channels, conf.window),
        test_y=y[test_idx],
        class_names=list(findings),
        initial_labeled=np.arange(len(initial)) if len(initial) else None,
        pool_ids=[paths[i].relative_to(root).as_posix() for i in pool],
        task_type=task.kind,
        sources=read_from,
    )
