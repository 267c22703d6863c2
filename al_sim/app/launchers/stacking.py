"""Which jobs of a sweep share a stack: same dataset, model, budget and trainer, at most
``stack_size`` members each (``auto``: as many as the free memory holds)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from al_sim.runtime.errors import ConfigError

AUTO = "auto"
# The config groups that must agree for jobs to run as one stack: the same data, network,
# labelling schedule and training (so the members train the same number of batches a round).
STACK_KEYS = ("dataset", "model", "budget", "trainer")


def stack_key(job_cfg: DictConfig) -> str:
    """What a job must share with the other members of its stack, as one string."""
    part = {key: OmegaConf.to_container(job_cfg[key], resolve=True) for key in STACK_KEYS}
    return json.dumps(part, sort_keys=True, default=str)


def stack_groups(keys: Sequence[str], size: int) -> list[list[int]]:
    """Job indices in stacks: jobs with equal keys together (in sweep order), split into
    stacks of at most ``size``; a job whose key no other job shares runs alone."""
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    return [stack for jobs in by_key.values() for stack in split(jobs, size)]


def split(jobs: list[int], size: int) -> list[list[int]]:
    """``jobs`` dealt round-robin into the fewest stacks of at most ``size``: neighbours in
    sweep order (Hydra varies the last-listed key fastest) go to different stacks, so each
    stack gets its share of every strategy, to within one member (not weighed by cost)."""
    if size < 1:
        raise ValueError(f"stack size {size} < 1")
    count = -(-len(jobs) // size)
    return [jobs[start::count] for start in range(count)]


def auto_stack_size(member_bytes: int, free_bytes: int, fraction: float, jobs: int,
                    workers: int = 1) -> int:
    """Members per stack that fit ``fraction`` of the free memory at ``member_bytes`` each,
    never fewer than one, and no more than spreads the group's ``jobs`` over the ``workers``
    that run stacks at once (so none of them idles)."""
    if member_bytes <= 0:
        raise ValueError(f"member footprint {member_bytes} bytes <= 0")
    fits = int(free_bytes * fraction // member_bytes)
    return max(1, min(-(-jobs // max(1, workers)), fits))


def parse_stack_size(value: object) -> int | None:
    """``hydra.launcher.stack_size``: a positive integer, or None for ``auto``."""
    if str(value).lower() == AUTO:
        return None
    try:
        size = int(str(value))
    except ValueError:
        size = 0
    if size < 1:
        raise ConfigError(f"hydra.launcher.stack_size={value} (conf/hydra/launcher/stack/"
                          f"default.yaml) is not a positive integer or '{AUTO}'; set e.g. "
                          "hydra.launcher.stack_size=8 or hydra.launcher.stack_size=auto")
    return size
