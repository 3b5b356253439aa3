"""The crash bench's report: counts summed per kind, failing trials named by seed."""

from __future__ import annotations

import json

from broker.bench.crash import CrashReport, TrialRow

ZERO = {"lost": 0, "duplicated": 0, "unauthorised": 0, "inconsistent": 0}


def test_report_sums_counts_and_names_failing_seeds() -> None:
    report = CrashReport(trials=3, first_seed=40, operations=40, kills=3)
    report.rows = [
        TrialRow(40, dict(ZERO), 5.0, ""),
        TrialRow(41, {**ZERO, "lost": 2, "unauthorised": 1}, 6.0, "/keep/trial-41/history.jsonl"),
        TrialRow(42, {**ZERO, "lost": 1}, 4.0, "/keep/trial-42/history.jsonl"),
    ]
    report.stats = {"kills": 9}
    assert report.counts == {**ZERO, "lost": 3, "unauthorised": 1}
    assert [r.seed for r in report.failed] == [41, 42]
    data = json.loads(json.dumps(report.as_dict()))
    assert data["counts"]["lost"] == 3
    assert [t["seed"] for t in data["failed_trials"]] == [41, 42]
    text = report.text()
    assert "seeds 40..42" in text and "seed 41 failed (lost 2, unauthorised 1)" in text
    violations = next(line for line in text.splitlines() if line.startswith("violations"))
    assert violations.split()[1:] == ["3", "0", "1", "0"]
    failed = next(line for line in text.splitlines() if line.startswith("trials failed"))
    assert failed.split()[2:] == ["2", "0", "1", "0"]
