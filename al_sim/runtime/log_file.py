"""Lines for the run's log file only (Hydra's ``<job>.log``), not the console again."""

from __future__ import annotations

import logging

from al_sim.runtime.errors import storable


def to_log_file(text: str, level: int = logging.INFO, name: str = "al_sim") -> None:
    """Write ``text`` to every file handler of the root logger (none outside a Hydra job)."""
    record = logging.makeLogRecord({"msg": storable(text), "levelno": level,
                                    "levelname": logging.getLevelName(level), "name": name})
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and level >= handler.level:
            handler.handle(record)
