"""Crash trials: a real `broker serve` process is killed with SIGKILL at random points
while agencies publish, receive, receipt, update, restrict, suspend, resume, withdraw and
flag through the real SDK; it is restarted on the same data directory each time, and the
history checker (broker/faults/history.py) judges what every party recorded.

Each trial's seed is printed in its failure message. By default the seeds are new each
run; BROKER_CRASH_SEED=N runs the trials with seeds N, N+1, ... (and `broker bench crash
--trials 1 --seed N` replays one outside pytest).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.faults.events import CheckpointSeen, Restarted
from broker.faults.trial import TrialPlan, environment_seed, run_trial
from broker.sandbox import Deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE_SEED = environment_seed()
TRIALS = 2  # and one more through the CLI below


@pytest.mark.parametrize("index", range(TRIALS))
async def test_crash_trial_loses_duplicates_leaks_and_forks_nothing(
    index: int, deployment: Deployment, tmp_path: Path
) -> None:
    seed = BASE_SEED + index
    plan = TrialPlan(seed=seed, operations=30, kills=2)
    result = await run_trial(deployment, tmp_path, plan)
    report = result.report
    assert report.ok, (
        f"crash trial with seed {seed} failed (replay: BROKER_CRASH_SEED={seed}, or "
        f"`broker bench crash --trials 1 --seed {seed}`); history in {result.history}, "
        f"broker log in {result.broker_log}\n{report.text()}"
    )
    # Not vacuous: the broker was killed and restarted, notices flowed, actions were taken
    # and the log was followed across the restarts.
    stats = report.stats
    assert stats["restarts"] == plan.kills, stats
    assert stats["kills"] == plan.kills + stats["kills_while_starting"], stats
    assert stats["publishes_acknowledged"] >= 5 and stats["handled"] >= 5, stats
    assert stats["actions_acknowledged"] + stats["restrictions_acknowledged"] >= 1, stats
    assert stats["log_entries"] >= stats["publishes_acknowledged"], stats
    last_restart = max(i for i, e in enumerate(result.entries) if isinstance(e.event, Restarted))
    after = [e for e in result.entries[last_restart:] if isinstance(e.event, CheckpointSeen)]
    assert after, "no checkpoint was checked after the last restart"


def test_bench_crash_runs_trials_and_prints_the_counts_as_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from broker.cli.main import main

    seed = str(BASE_SEED + TRIALS)
    args = ["--trials", "1", "--seed", seed, "--operations", "12", "--kills", "1"]
    code = main(["bench", "crash", *args, "--dir", str(tmp_path), "--json"])
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert code == 0, out.out + out.err
    assert data["counts"] == {"lost": 0, "duplicated": 0, "unauthorised": 0, "inconsistent": 0}
    assert data["trials"] == 1 and data["kills_per_trial"] == 1
    assert data["covered"]["restarts"] == 1 and data["covered"]["publishes_acknowledged"] >= 3
    assert "trial 1/1 seed" in out.err


def test_bench_crash_refuses_too_few_operations(capsys: pytest.CaptureFixture[str]) -> None:
    from broker.cli.main import main

    assert main(["bench", "crash", "--operations", "3", "--kills", "2"]) == 2
    assert "--operations at least --kills + 4" in capsys.readouterr().err
