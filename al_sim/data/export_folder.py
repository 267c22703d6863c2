"""Write a MedMNIST dataset as the image-folder layout ``dataset=folder`` reads (PNG files).

``python -m al_sim.data.export_folder --name breastmnist --root ~/.medmnist --out DIR``
puts the train split (or a stratified ``--max-pool`` subsample of it, the same
one ``dataset.max_pool`` picks) into the pool, ``--initial`` of those images
(stratified per class) into ``initial_labeled_images/<class>/``, the rest into
``unlabeled_pool_images/`` with their labels in ``pool_labels.csv``, and the
test split into ``test_images/<class>/``. File names keep the split index
(``train_000123.png``). A multi-label archive (ChestMNIST) becomes a manifest
folder instead: every image in ``images/`` and ``manifest.csv`` (``file``, one
0/1 column per finding, ``split``: initial | pool | test), read back with
``dataset.manifest=manifest.csv``; draws are stratified by each image's rarest finding.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from al_sim.config.data import INITIAL_DIR, POOL_DIR, POOL_LABELS_FILE, TEST_DIR
from al_sim.data.medmnist import read_medmnist
from al_sim.maths.sampling import stratified_sample
from al_sim.maths.task import Task, TaskType
from al_sim.runtime.errors import EXIT_USER_ERROR, ALSimError, DataError, os_error_line

MANIFEST, MANIFEST_IMAGES = "manifest.csv", "images"  # a multi-label export


def class_folder_names(labels: list[str]) -> list[str]:
    """File-system-safe folder names whose sorted order is the label order."""
    slugs = [re.sub(r"[^A-Za-z0-9.-]+", "_", s).strip("_")[:60] or "class" for s in labels]
    if sorted(slugs) != slugs or len(set(slugs)) != len(slugs):
        width = len(str(len(slugs) - 1))
        slugs = [f"{i:0{width}d}_{s}" for i, s in enumerate(slugs)]
    return slugs


def _save(images: np.ndarray, indices: np.ndarray, folder: Path, prefix: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in indices:
        name = f"{prefix}_{int(i):06d}.png"
        Image.fromarray(images[i]).save(folder / name, compress_level=1)
        names.append(name)
    return names


def export(name: str, out: Path, root: str | Path = "~/.medmnist", size: int = 28,
           initial: int = 20, max_pool: int | None = None, max_test: int | None = None,
           seed: int = 0, verify_checksum: bool = False) -> dict[str, int]:
    """Write the folder layout for one MedMNIST dataset; returns the image counts written."""
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not empty; choose a new --out folder")
    data = read_medmnist(name, size, root, verify_checksum=verify_checksum)
    train_x, train_y = data.images["train"], data.labels["train"]
    task = Task.of(TaskType.multilabel if train_y.ndim == 2 else None, data.class_names)
    strata = task.strata(train_y)
    pool = np.arange(len(train_y))
    if max_pool is not None and max_pool < len(pool):
        # the subset dataset.max_pool picks
        pool = stratified_sample(strata, max_pool, np.random.default_rng(seed))
    if not 0 < initial < len(pool):
        raise DataError(f"--initial must be in [1, {len(pool) - 1}] (the pool has {len(pool)} "
                        f"images), got {initial}")
    picked = pool[stratified_sample(strata[pool], initial,
                                    np.random.default_rng(seed + 1))]
    rest = np.setdiff1d(pool, picked)
    test_x, test_y = data.images["test"], data.labels["test"]
    test = np.arange(len(test_y))
    if max_test is not None and max_test < len(test):
        test = stratified_sample(task.strata(test_y), max_test, np.random.default_rng(seed))
    counts = {"initial": len(picked), "unlabeled": len(rest), "test": len(test),
              "channels": int(data.info["n_channels"]), "size": size}
    if task.multilabel:
        _manifest(out, data.class_names, [("initial", train_x, train_y, picked, "train"),
                                          ("pool", train_x, train_y, rest, "train"),
                                          ("test", test_x, test_y, test, "test")])
        return {**counts, "manifest": 1}
    folders = class_folder_names(data.class_names)
    for c, folder in enumerate(folders):
        _save(train_x, picked[train_y[picked] == c], out / INITIAL_DIR / folder, "train")
        _save(test_x, test[test_y[test] == c], out / TEST_DIR / folder, "test")
    names = _save(train_x, rest, out / POOL_DIR, "train")
    with (out / POOL_LABELS_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("file", "label"))
        writer.writerows((n, folders[train_y[i]]) for n, i in zip(names, rest, strict=True))
    return counts


def _manifest(out: Path, findings: list[str],
              parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, str]]) -> None:
    """A multi-label folder: ``images/`` and ``manifest.csv`` (file, findings..., split)."""
    rows = []
    for split, images, labels, indices, prefix in parts:
        names = _save(images, indices, out / MANIFEST_IMAGES, prefix)
        rows += [(n, *(int(b) for b in labels[i]), split)
                 for n, i in zip(names, indices, strict=True)]
    with (out / MANIFEST).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("file", *findings, "split"))
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m al_sim.data.export_folder",
        description="Write a MedMNIST .npz dataset as PNG image folders for dataset=folder.")
    parser.add_argument("--name", required=True, help="2D MedMNIST dataset, e.g. breastmnist")
    parser.add_argument("--out", required=True, type=Path, help="new folder to write")
    parser.add_argument("--root", default="~/.medmnist", help="folder of the .npz files")
    parser.add_argument("--size", type=int, default=28, choices=(28, 64, 128, 224))
    parser.add_argument("--initial", type=int, default=20,
                        help="initial labelled images, stratified per class (default 20)")
    parser.add_argument("--max-pool", type=int, default=None,
                        help="cap the pool at this many train images (stratified)")
    parser.add_argument("--max-test", type=int, default=None,
                        help="cap the test images (stratified)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsamples")
    parser.add_argument("--verify-checksum", action="store_true",
                        help="refuse an archive whose MD5 differs from the official one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    for flag in ("max_pool", "max_test"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be > 0")
    try:
        counts = export(args.name, args.out, args.root, args.size, args.initial, args.max_pool,
                        args.max_test, args.seed, args.verify_checksum)
    except ALSimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # --out cannot be made or written
        print(os_error_line(exc, "give --out a folder"), file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"wrote {args.out}: {counts['initial']} initial labelled, {counts['unlabeled']} "
          f"unlabelled pool and {counts['test']} test images")
    manifest = f" dataset.manifest={MANIFEST}" if counts.get("manifest") else ""
    print(f"run it: python -m al_sim.run dataset=folder dataset.root={args.out} "
          f"dataset.image_size={counts['size']} dataset.channels={counts['channels']}{manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
