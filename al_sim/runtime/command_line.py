"""The command line as Hydra's parser takes it: a home path quoted, the multirun flag first."""

from __future__ import annotations

MULTIRUN_FLAGS = ("-m", "--multirun")


def quote_home_path(arg: str) -> str:
    """``key=~/x`` as ``key='~/x'``: Hydra's grammar refuses a bare ``~`` the shell left alone."""
    key, sep, value = arg.partition("=")
    if sep and value.startswith("~") and not any(q in value for q in "'\"") and (
            key and not key.startswith("-")):
        return f"{key}='{value}'"
    return arg


def multirun_flag_first(argv: list[str]) -> list[str]:
    """``strategy=entropy -m seed=0,1`` as ``-m strategy=entropy seed=0,1``: Hydra's parser
    takes its flags only before the overrides (else "unrecognized arguments")."""
    flags = [a for a in argv if a in MULTIRUN_FLAGS]
    return [*flags[:1], *(a for a in argv if a not in MULTIRUN_FLAGS)] if flags else argv


def hydra_argv(argv: list[str]) -> list[str]:
    """``python -m al_sim.run``'s arguments made ready for Hydra's parser."""
    return [quote_home_path(arg) for arg in multirun_flag_first(argv)]
