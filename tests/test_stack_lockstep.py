"""A stack whose members train in lock-step (``hydra.launcher.lockstep=true``): the mixed stack
gives the files and the MLflow contract of an unstacked run, and its failing member fails alone;
a stopped stack closes each member's run KILLED and resumes it; each round's pool scoring is
one pass through the stack, each member selecting from its own outputs (in-process, the loop
in member threads)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.utils import JobReturn, JobStatus

from al_sim.app.launchers.lockstep_workers import run_lockstep
from al_sim.app.lockstep_hook import LockstepTrainer
from al_sim.config.data import PreprocessConf
from al_sim.config.schema import BudgetConf, TrainerConf
from al_sim.core import stack_scoring
from al_sim.core.fused import FusedStack
from al_sim.core.loop import Seeds, run_active_learning
from al_sim.core.oracle import Oracle
from al_sim.core.training import Trainer
from al_sim.data.transforms import Preprocess
from al_sim.strategies.base import ArrayModelView, QueryContext, Strategy
from al_sim.strategies.bayesian import BALD
from al_sim.strategies.diversity import BADGE
from al_sim.strategies.uncertainty import Entropy
from tests.conftest import REPO, run_cli, start_cli
from tests.stack_faults import RaisingSampling
from tests.test_loop import Factory, Recorder
from tests.test_stack import ENV, TINY, client, job_runs

LOCKSTEP = ["hydra/launcher=al_stack", "hydra.launcher.lockstep=true"]


def _form(run_dir: Path) -> tuple[list[str], str]:
    """A run dir's file names and its metrics.csv header."""
    names = sorted(p.name for p in run_dir.iterdir())
    return names, (run_dir / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_a_mixed_lockstep_stack_has_the_form_of_runs_alone_and_a_failing_member_fails_alone(
        tmp_path: Path) -> None:
    sweep = ["-m", "strategy=random,bald,badge,raising", "seed=0", *TINY, "budget.rounds=1",
             f"hydra.searchpath=[file://{REPO / 'tests/conf'}]"]
    out = run_cli([*sweep, *LOCKSTEP, "hydra.launcher.stack_size=4"], tmp_path, timeout=600,
                  env=ENV, process=False)  # one worker: the stack runs in the launcher's process
    assert out.returncode == 1, out.stderr[-3000:]  # a sweep with a failed job exits 1
    assert "4 job(s) ran as 1 stack(s)" in out.stderr
    assert "raising strategy: this member fails on purpose" in out.stderr
    # round 0 trains all four together; the raising member fails at its first query and the
    # other three go on together in round 1
    assert out.stderr.count("lock-step: 4 member(s) trained together") == 1, out.stderr[-3000:]
    assert out.stderr.count("lock-step: 3 member(s) trained together") == 1, out.stderr[-3000:]
    alone = run_cli(["strategy=badge", "seed=0", *TINY[:-2], TINY[-1], "budget.rounds=1",
                     "hydra.run.dir=single"], tmp_path, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    want = _form(tmp_path / "single")
    dirs = {("raising" in (d / "config.yaml").read_text()): d
            for d in (tmp_path / "sweep").glob("[0-9]*")}
    finished = [d for d in (tmp_path / "sweep").glob("[0-9]*") if d != dirs[True]]
    assert len(finished) == 3 and all(_form(d) == want for d in finished)
    assert "error" in (dirs[True] / "run.log").read_text().lower()
    for d in finished:  # each member's own log, with its own lines only
        text = (d / "run.log").read_text()
        assert text.count(": started in ") == 1 and f"started in {d}" in text
    runs = job_runs(tmp_path)
    statuses = {r.data.tags["strategy"]: r.info.status for r in runs.values()}
    assert statuses == {"random": "FINISHED", "bald": "FINISHED", "badge": "FINISHED",
                        "raising": "FAILED"}, statuses
    mlflow = client(tmp_path)
    single = [r for r in mlflow.search_runs([mlflow.get_experiment_by_name("al_sim")
                                             .experiment_id])
              if r.data.tags.get("al_sim.sweep") is None and r.data.tags.get("al_sim.role")
              is None]
    keys = set(single[0].data.metrics) if single else None
    for run in runs.values():
        if run.info.status != "FINISHED":
            continue
        assert keys is None or set(run.data.metrics) == keys
        steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "test/accuracy")]
        assert steps == sorted(set(steps)) and len(steps) == 2  # step = labelled, once each


@pytest.mark.slow
def test_a_stopped_lockstep_stack_closes_each_member_killed_and_resumes_it(tmp_path: Path
                                                                          ) -> None:
    """SIGTERM reaches the main thread only; each member thread still closes its own run
    KILLED (none left RUNNING), the sweep exits 143, and the rerun resumes each run."""
    args = ["-m", "strategy=random,entropy", "seed=0", *TINY, "budget.rounds=2", *LOCKSTEP,
            "hydra.launcher.stack_size=2"]
    proc = start_cli(args, tmp_path)
    try:
        deadline = time.monotonic() + 300
        while len(list((tmp_path / "sweep").glob("*/checkpoint.pt"))) < 2:  # both past round 0
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    killed = job_runs(tmp_path)
    assert len(killed) == 2
    assert {r.info.status for r in killed.values()} == {"KILLED"}, err[-3000:]

    again = run_cli(args, tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    finished = job_runs(tmp_path)
    assert {r.info.status for r in finished.values()} == {"FINISHED"}
    assert {n: r.info.run_id for n, r in finished.items()} == {
        n: r.info.run_id for n, r in killed.items()}  # the same runs, resumed
    for run in finished.values():
        steps = [m.step for m in client(tmp_path).get_metric_history(run.info.run_id,
                                                                      "test/accuracy")]
        assert sorted(steps) == sorted(set(steps)) and len(steps) == 3  # 2 rounds + initial


BUDGET = BudgetConf(name="t", initial=20, query_size=10, rounds=2, stop_set_size=100)


def _stack(dataset, strategies: list[Strategy], monkeypatch, joint_fails: bool = False
           ) -> tuple[list, list, list]:
    """The members (strategy ``k``, seed ``k``) run by the lock-step stack worker in threads,
    the loop and a lock-step trainer in each; returns their job returns, recorders and every
    joint scoring pass (source, asks, outputs, fused trunk calls). ``joint_fails``: the
    strategies' joint pass raises (members then score alone)."""
    passes: list[tuple[str, list, list, int]] = []
    joint, fused_outputs = stack_scoring.score_members, FusedStack.outputs
    trunk_calls = [0]

    def counted(self, name, xb, shared, post=None):
        trunk_calls[0] += name == "features"
        return fused_outputs(self, name, xb, shared, post)

    def recorded(trainer, models, source, asks):
        if joint_fails and any(need.kind == "mc" for _idx, need in asks):
            raise RuntimeError("the joint pass broke")
        before = trunk_calls[0]
        outs = joint(trainer, models, source, asks)
        passes.append((source.key[1], asks, outs, trunk_calls[0] - before))
        return outs

    def alone(*args, **kwargs):
        raise AssertionError("a member scored on its own")

    monkeypatch.setattr(FusedStack, "outputs", counted)
    monkeypatch.setattr(stack_scoring, "score_members", recorded)
    if not joint_fails:
        monkeypatch.setattr(Trainer, "_map", alone)  # every pass is the stack's
    recorders = [Recorder() for _ in strategies]
    conf = TrainerConf(epochs=2, min_steps=4, batch_size=32, eval_batch_size=512)

    def execute(num: int, _overrides: list[str]) -> JobReturn:
        trainer = LockstepTrainer(conf, Preprocess(PreprocessConf(), channels=1),
                                  torch.device("cpu"))
        try:
            result = run_active_learning(dataset, Factory(), strategies[num],
                                         Oracle(dataset.pool_y, dataset.n_classes), trainer,
                                         BUDGET, num, [recorders[num]])
        except Exception as exc:
            return JobReturn(status=JobStatus.FAILED, _return_value=exc)
        return JobReturn(status=JobStatus.COMPLETED, _return_value=result)

    torch.set_num_threads(1)
    returns = run_lockstep([(k, k, []) for k in range(len(strategies))], execute)
    return [r for _i, r in returns], recorders, passes


def test_a_stack_scores_the_pool_once_per_round_and_each_member_selects_from_its_own(
        tiny_dataset, monkeypatch) -> None:
    strategies = [Entropy(), BALD(mc_samples=4), BADGE(chunk_size=64)]
    returns, recorders, passes = _stack(tiny_dataset, strategies, monkeypatch)
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 3
    # per round: the test set and the stop-signal subset; in rounds 1-2 the strategies' pool
    # scoring too: one joint pass each, whose trunk ran once (one batch of every row asked)
    kinds = [(what, tuple(need.kind for _idx, need in asks)) for what, asks, _o, _n in passes]
    strategy_pass = ("pool", ("probs", "mc", "features_and_probs"))
    assert kinds == [("test", ("probs",) * 3), ("pool", ("probs",) * 3),
                     strategy_pass, ("test", ("probs",) * 3), ("pool", ("probs",) * 3),
                     strategy_pass, ("test", ("probs",) * 3), ("pool", ("probs",) * 3)]
    assert all(trunk == 1 for *_rest, trunk in passes)
    n = tiny_dataset.n_pool
    for round_, (_what, asks, outs, _n) in enumerate(
            [p for p in passes if p[1][1][1].kind == "mc"], start=1):
        for k, (strategy, (idx, _need), out) in enumerate(zip(strategies, asks, outs,
                                                              strict=True)):
            record = recorders[k].queries[round_]
            labeled = np.setdiff1d(np.arange(n), idx)
            if k == 0:
                view = ArrayModelView(probs=_full(n, idx, out, 1 / 3))
            elif k == 1:
                view = ArrayModelView(mc=_full(n, idx, out, 1 / 3))
            else:
                view = ArrayModelView(features=_full(n, idx, out[0], 0.0),
                                      probs=_full(n, idx, out[1], 1 / 3))
            ctx = QueryContext(model=view, unlabeled=idx, labeled=labeled,
                               labeled_y=tiny_dataset.pool_y[labeled], n_classes=3,
                               rng=np.random.default_rng([Seeds.derive(k).strategy, round_]),
                               round=round_)
            assert np.array_equal(strategy.select(ctx, 10).indices, record.indices)
    _again, recorders2, _p = _stack(tiny_dataset, strategies, monkeypatch)  # the same bits
    for first, second in zip(recorders, recorders2, strict=True):
        assert all(np.array_equal(a.indices, b.indices)
                   and np.array_equal(a.scores, b.scores, equal_nan=True)
                   for a, b in zip(first.queries, second.queries, strict=True))
        assert [r.metrics for r in first.rounds] == [r.metrics for r in second.rounds]


def _full(n: int, idx: np.ndarray, rows: np.ndarray, fill: float) -> np.ndarray:
    """A pool-sized array holding a member's own ``rows`` at ``idx`` (``fill`` elsewhere)."""
    out = np.full((n, *rows.shape[1:]), fill, dtype=rows.dtype)
    out[idx] = rows
    return out


def test_a_member_whose_strategy_raises_fails_alone_and_the_rest_score_together(
        tiny_dataset, monkeypatch) -> None:
    returns, recorders, passes = _stack(tiny_dataset, [Entropy(), RaisingSampling(),
                                                       BADGE(chunk_size=64)], monkeypatch)
    assert [r.status for r in returns] == [JobStatus.COMPLETED, JobStatus.FAILED,
                                           JobStatus.COMPLETED]
    assert "fails on purpose" in str(returns[1]._return_value)
    assert [len(r.rounds) for r in recorders] == [3, 1, 3]
    assert [len(asks) for _w, asks, _o, _n in passes] == [3, 3] + [2] * 6  # then 2 together


def test_a_failed_joint_pass_scores_members_alone_and_a_member_whose_scoring_raises_fails_alone(
        tiny_dataset, monkeypatch, capsys) -> None:
    def broken(*args, **kwargs):
        raise ValueError("MC scoring broke")

    monkeypatch.setattr(Trainer, "mc_proba", broken)
    returns, recorders, _passes = _stack(tiny_dataset, [Entropy(), BALD(mc_samples=4),
                                                        BADGE(chunk_size=64)], monkeypatch,
                                         joint_fails=True)
    assert [r.status for r in returns] == [JobStatus.COMPLETED, JobStatus.FAILED,
                                           JobStatus.COMPLETED]
    assert "MC scoring broke" in str(returns[1]._return_value)
    assert [len(r.rounds) for r in recorders] == [3, 1, 3]
    assert "scoring together failed (RuntimeError: the joint pass broke)" in capsys.readouterr().err
