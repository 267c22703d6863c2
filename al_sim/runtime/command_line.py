"""The command line as Hydra's parser takes it: a home path quoted, the multirun flag first,
``--info``'s choice given."""

from __future__ import annotations

from al_sim.runtime.errors import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")
# Hydra's modes: at most one per command (else its ValueError, a traceback)
MODES = {"-r": "--run", "--run": "--run", "-m": "--multirun", "--multirun": "--multirun",
         "-c": "--cfg", "--cfg": "--cfg", "-i": "--info", "--info": "--info",
         "-sc": "--shell-completion", "--shell-completion": "--shell-completion"}


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


def check_one_mode(argv: list[str]) -> None:
    """ConfigError when ``argv`` asks Hydra for two modes at once (``--cfg job -m ...``)."""
    modes = sorted({MODES[a] for a in argv if a in MODES})
    if len(modes) > 1:
        raise ConfigError(f"{' and '.join(modes)} cannot be given together; give one (a sweep's "
                          "job config: python -m al_sim.run --cfg job <one job's overrides>)")


def info_choice_given(argv: list[str]) -> list[str]:
    """``--info strategy=bald`` as ``--info all strategy=bald``: Hydra's ``--info`` takes an
    optional choice and would read the override as one ("invalid choice")."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if MODES.get(arg) == "--info" and "=" in (argv[i + 1] if i + 1 < len(argv) else ""):
            out.append("all")
    return out


def hydra_argv(argv: list[str]) -> list[str]:
    """``python -m al_sim.run``'s arguments made ready for Hydra's parser."""
    check_one_mode(argv)
    return [quote_home_path(arg) for arg in info_choice_given(multirun_flag_first(argv))]
