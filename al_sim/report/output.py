"""Where a comparison report is written."""

from __future__ import annotations

import re
from pathlib import Path

from al_sim.config.schema import CompareConf
from al_sim.report.reader import SweepRef
from al_sim.tracking.contract import sqlite_file


def output_folder(conf: CompareConf, ref: SweepRef, uri: str, launch_dir: Path) -> Path:
    """``output_dir``, else ``<sweep dir>/compare`` when the sweep dir is here, else a fallback."""
    if conf.output_dir:
        return Path(conf.output_dir)
    if ref.sweep_id:
        roots = [launch_dir]
        if (database := sqlite_file(uri)) is not None:
            roots.append(database.parent)
        for root in roots:
            if (root / ref.sweep_id).is_dir():
                return root / ref.sweep_id / "compare"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", ref.sweep_id or f"{ref.experiment}-all").strip("_")
    return launch_dir / "al_sim_compare" / slug
