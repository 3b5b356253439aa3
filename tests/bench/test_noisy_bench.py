"""`broker bench noisy`: settings refused, the report's ratio and verdict, and a tiny real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.bench.noisy import NoisyReport, Run
from broker.cli.main import main


@pytest.mark.parametrize(
    "args",
    [
        ["--seconds", "0"],
        ["--rate", "0"],
        ["--quota", "0"],
        ["--flood-batch", "0"],
        ["--rate", "200", "--quota", "100"],  # the well-behaved agency must stay under it
    ],
)
def test_bench_noisy_refuses_bad_settings(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "noisy", *args]) != 0
    assert "must" in capsys.readouterr().err


def test_the_report_compares_the_throttled_p99_with_the_quiet_one() -> None:
    report = NoisyReport(20, 10, 100, 16, 8)
    report.runs = [
        Run("alone", 200, 3.0, 10.0),
        Run("flood, no quotas", 200, 150.0, 900.0, flood_accepted=8000),
        Run("flood, quotas", 200, 3.5, 15.0, flood_accepted=1000, flood_refused=500),
    ]
    assert report.ratio == 1.5 and report.within_goal
    assert "1.50 (within the goal of 2x)" in report.text()
    report.runs[2] = Run("flood, quotas", 200, 9.0, 30.0)
    assert report.ratio == 3.0 and not report.within_goal
    assert "NOT within" in report.text()
    assert json.loads(json.dumps(report.as_dict()))["ratio_p99"] == 3.0


@pytest.mark.integration
@pytest.mark.slow
def test_bench_noisy_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A quota of 10 per second (burst 20) under floods of 16 envelopes a call: the second
    # flood call is refused however slowly a loaded machine runs them.
    args = ["--seconds", "1", "--rate", "5", "--quota", "10", "--flood-concurrency", "2"]
    assert main(["bench", "noisy", *args, "--dir", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    runs = {r["name"]: r for r in got["runs"]}
    assert set(runs) == {"alone", "flood, no quotas", "flood, quotas"}
    assert all(r["samples"] == 5 and r["p99_ms"] >= r["p50_ms"] > 0 for r in runs.values())
    assert runs["alone"]["flood_calls"] == 0
    assert runs["flood, no quotas"]["flood_accepted"] > 0
    assert runs["flood, no quotas"]["flood_refused"] == 0  # no quotas: nothing refused
    assert runs["flood, quotas"]["flood_refused"] > 0  # throttled
