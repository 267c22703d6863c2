"""Entry point: ``python -m al_sim.compare [overrides]``, the cross-run report of a sweep.

Reads the FINISHED child runs of a sweep (default: the latest) from MLflow and
writes to ``<sweep dir>/compare/`` (or ``output_dir``), also uploaded to the
sweep's parent run under ``compare/``: ``learning_curves.png``, ``summary.csv``,
``summary.md``, ``curves.csv``, ``penalty_matrix.csv``, ``penalty_matrix.png``,
``compare.yaml`` (see :mod:`al_sim.report.build`). Hydra writes no files of its own.

Exit status: 0, or 2 with one ``error:`` line (nothing matches, curves of different budgets).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from al_sim.config.composition import (
    check_bool_files,
    check_bool_overrides,
    check_known_keys,
    composition_error_line,
    files_read,
)
from al_sim.config.registry import register_configs
from al_sim.config.schema import DEFAULT_EXPERIMENT, CompareConf
from al_sim.report.reader import RunReader
from al_sim.runtime.command_line import hydra_argv
from al_sim.runtime.errors import EXIT_USER_ERROR, ALSimError, os_error_line
from al_sim.runtime.interrupts import interrupt
from al_sim.runtime.launcher_watch import (
    interrupt_reason,
    interrupted_status,
    signal_reason,
)
from al_sim.tracking.contract import tracking_uri

COMPARE_CONFIG = "conf/compare.yaml"


def cli(cfg: DictConfig, launch_dir: Path, experiment_given: bool = False,
        overrides: Sequence[str] = (), files: Sequence[tuple[Path, str]] = ()) -> int:
    """Report for a composed config; the exit status (2 after one ``error:`` line).
    ``experiment_given=False``: tracking.experiment was left at its default, so the sweep is
    looked for in every experiment (a sweep logs into its own, see SweepCallback);
    ``overrides``, ``files``: the command line's and the config files read (file, package),
    whose true/false values are checked."""
    try:
        check_known_keys(cfg, top=COMPARE_CONFIG)  # an appended typo is refused, not ignored
        check_bool_overrides(cfg, overrides)
        check_bool_files(cfg, files)
        conf = OmegaConf.to_object(cfg)
        assert isinstance(conf, CompareConf)
        reader = RunReader(tracking_uri(conf.tracking.uri, launch_dir), conf.tracking.http_timeout)
        anywhere = not experiment_given and conf.tracking.experiment == DEFAULT_EXPERIMENT
        ref = reader.select(conf.tracking.experiment, conf.sweep_id, anywhere=anywhere)
        from al_sim.report.publish import run_compare  # statistics and figures: now needed

        run_compare(conf, launch_dir, reader, ref)
    except ALSimError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except OSError as exc:  # the output dir cannot be made or written
        print(os_error_line(exc, "set output_dir="), file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return 0


def report(cfg: DictConfig) -> None:
    """Hydra task: one report."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    given = any(o.lstrip("+~").split("=", 1)[0] == "tracking.experiment" for o in overrides)
    status = cli(cfg, Path(hydra.utils.get_original_cwd()), experiment_given=given,
                 overrides=overrides, files=files_read(hydra_cfg))
    if status:
        sys.exit(status)


def _interrupted(signum: int, frame: object) -> None:
    interrupt(signal_reason(signum))


def main() -> None:
    """``python -m al_sim.compare [overrides]``; a config Hydra refuses is one ``error:``
    line and exit status 2, as a run's is. Ctrl-C or SIGTERM is one line too, after the
    store call under way (a summary run is logged whole or not at all)."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let errors reach us instead of a trace
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    register_configs()
    try:
        sys.argv[1:] = hydra_argv(sys.argv[1:])  # a ``~`` path, one mode: as the run's
        hydra.main(version_base="1.3", config_path="../conf", config_name="compare")(report)()
    except KeyboardInterrupt as exc:
        by = interrupt_reason(exc)
        print(f"interrupted ({by}): the report is not finished; run the same command again",
              file=sys.stderr, flush=True)
        sys.exit(interrupted_status(by))
    except ALSimError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except Exception as exc:
        line = composition_error_line(exc, top=COMPARE_CONFIG)
        if line is None:
            raise
        print(line, file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
