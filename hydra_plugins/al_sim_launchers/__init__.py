"""al_sim's Hydra launchers and sweeper, named here because Hydra loads plugins only from the
``hydra_plugins`` package; the code is in :mod:`al_sim.app.launchers` and
:mod:`al_sim.app.sweeper`. Hydra imports this module at every start: it stays light, and a
launcher whose plugin is not installed is simply absent."""

import contextlib

from al_sim.app.sweeper import AlBasicSweeper as _Basic

with contextlib.suppress(ImportError):
    from al_sim.app.launchers.submitit_jobs import AlLocalLauncher as _Local
    from al_sim.app.launchers.submitit_jobs import AlSlurmLauncher as _Slurm

    class AlSlurmLauncher(_Slurm):
        """``hydra/launcher=al_submitit_slurm``."""

    class AlLocalLauncher(_Local):
        """``hydra/launcher=al_submitit_local``."""

with contextlib.suppress(ImportError):
    from al_sim.app.launchers.ray_tasks import AlRayLauncher as _Ray

    class AlRayLauncher(_Ray):
        """``hydra/launcher=al_ray``."""

with contextlib.suppress(ImportError):
    from al_sim.app.launchers.joblib_workers import AlJoblibLauncher as _Joblib

    class AlJoblibLauncher(_Joblib):
        """``hydra/launcher=al_joblib``."""

with contextlib.suppress(ImportError):
    from al_sim.app.launchers.stack_workers import AlStackLauncher as _Stack

    class AlStackLauncher(_Stack):
        """``hydra/launcher=al_stack``."""

with contextlib.suppress(ImportError):
    from al_sim.app.launchers.stack_jobs import AlStackLocalLauncher as _StackLocal
    from al_sim.app.launchers.stack_jobs import AlStackSlurmLauncher as _StackSlurm

    class AlStackSlurmLauncher(_StackSlurm):
        """``hydra/launcher=al_stack_slurm``."""

    class AlStackLocalLauncher(_StackLocal):
        """``hydra/launcher=al_stack_local``."""

with contextlib.suppress(ImportError):
    from al_sim.app.launchers.ray_stacks import AlStackRayLauncher as _StackRay

    class AlStackRayLauncher(_StackRay):
        """``hydra/launcher=al_stack_ray``."""


class AlBasicSweeper(_Basic):
    """``hydra/sweeper=al_basic`` (al_sim's default sweeper)."""
