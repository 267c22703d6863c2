"""Hydra launchers whose sweep survives a lost job (see :mod:`al_sim.app.lost_jobs`).

Subclasses of the submitit, Ray and joblib launcher plugins, chosen by
``conf/hydra/launcher/al_*.yaml``: they wait for each job on its own, report a job that
ends with no result as lost instead of raising, and cancel the jobs they submitted when
the launcher is interrupted.
"""
