"""Where this process runs, as run tags: host, SLURM job and array ids, Ray node, log file.

Read from the environment the scheduler sets (``SLURM_*``), Ray's runtime context when
Ray runs this process, and submitit's log file or the run's own log file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys

from al_sim.tracking.contract import (
    HOST_TAG,
    LOG_TAG,
    RAY_NODE_TAG,
    SLURM_ARRAY_TAG,
    SLURM_JOB_TAG,
)


def _log_file() -> str | None:
    """submitit's stdout file of this job, else the file the root logger writes to."""
    submitit = sys.modules.get("submitit")
    if submitit is not None and "SUBMITIT_FOLDER" in os.environ:
        with contextlib.suppress(Exception):  # not a submitit job after all
            return str(submitit.JobEnvironment().paths.stdout)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename != os.devnull:
            return handler.baseFilename
    return None


def _ray_node() -> str | None:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())


def placement_tags() -> dict[str, str]:
    """The tags that say where this attempt of a run runs (absent ones are left out)."""
    env = os.environ
    array = (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
             if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env else None)
    tags = {HOST_TAG: socket.gethostname(), SLURM_JOB_TAG: env.get("SLURM_JOB_ID"),
            SLURM_ARRAY_TAG: array, RAY_NODE_TAG: _ray_node(), LOG_TAG: _log_file()}
    return {k: v for k, v in tags.items() if v}
