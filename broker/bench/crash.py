"""`broker bench crash`: many crash trials (broker/faults/trial.py) in a row, and the
violations the history checker found in them, counted by kind.

Each trial gets a fresh deployment (CA, keys, registry) and data directory, and its own
seed (the first one given, then +1 each). The histories of failing trials are kept, with
their broker logs, so that each can be read, checked again and replayed by its seed.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.faults.history import CATEGORIES
from broker.faults.trial import TrialPlan, run_trial
from broker.sandbox import create_deployment


@dataclass(frozen=True)
class TrialRow:
    seed: int
    counts: dict[str, int]
    seconds: float
    history: str  # kept only when the trial failed ("" otherwise)


@dataclass
class CrashReport:
    trials: int
    first_seed: int
    operations: int
    kills: int
    rows: list[TrialRow] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    kept: str = ""  # directory holding the failing trials' histories

    @property
    def counts(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for row in self.rows:
            total.update(row.counts)
        return {c: total.get(c, 0) for c in CATEGORIES}

    @property
    def failed(self) -> list[TrialRow]:
        return [r for r in self.rows if any(r.counts.values())]

    def as_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "first_seed": self.first_seed,
            "operations_per_trial": self.operations,
            "kills_per_trial": self.kills,
            "counts": self.counts,
            "failed_trials": [
                {"seed": r.seed, "counts": r.counts, "history": r.history} for r in self.failed
            ],
            "trial_seconds": [round(r.seconds, 2) for r in self.rows],
            "covered": self.stats,
            "seconds": round(self.seconds, 1),
        }

    def text(self) -> str:
        last = self.first_seed + self.trials - 1
        lines = [
            f"crash trials: {self.trials} (seeds {self.first_seed}..{last}), "
            f"{self.kills} SIGKILL(s) and {self.operations} operations each, "
            f"{self.seconds:.0f} s",
            "",
            f"{'':14}" + "".join(f"{c:>14}" for c in CATEGORIES),
            f"{'violations':14}" + "".join(f"{self.counts[c]:>14}" for c in CATEGORIES),
            f"{'trials failed':14}"
            + "".join(f"{sum(1 for r in self.rows if r.counts[c]):>14}" for c in CATEGORIES),
            "",
            "covered: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.stats.items()),
        ]
        for r in self.failed:
            found = ", ".join(f"{k} {v}" for k, v in r.counts.items() if v)
            lines.append(f"seed {r.seed} failed ({found}): {r.history}")
        return "\n".join(lines)


def run(
    trials: int,
    first_seed: int,
    operations: int,
    kills: int,
    directory: Path | None,
    progress: Callable[[str], None],
) -> CrashReport:
    """Run `trials` crash trials; failing trials' histories are kept under `directory`
    (default: a new temporary directory, removed if every trial passed)."""
    report = CrashReport(trials, first_seed, operations, kills)
    scratch = Path(tempfile.mkdtemp(prefix="broker-crash-"))
    keep = directory or scratch
    started = time.monotonic()
    covered: Counter[str] = Counter()
    try:
        for i in range(trials):
            seed = first_seed + i
            root = scratch / f"run-{seed}"
            deployment = create_deployment(root / "deployment")
            plan = TrialPlan(seed=seed, operations=operations, kills=kills)
            result = asyncio.run(run_trial(deployment, root, plan))
            counts = result.report.counts()
            kept = ""
            if not result.report.ok:
                target = keep / f"trial-{seed}"
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(result.history, target / "history.jsonl")
                shutil.copy(result.broker_log, target / "broker.log")
                kept = str(target / "history.jsonl")
                report.kept = str(keep)
            covered.update(result.report.stats)
            report.rows.append(TrialRow(seed, counts, result.seconds, kept))
            verdict = "ok" if result.report.ok else result.report.text(limit=5)
            progress(f"trial {i + 1}/{trials} seed {seed} ({result.seconds:.1f} s): {verdict}")
            shutil.rmtree(root, ignore_errors=True)
    finally:
        if keep != scratch or not report.kept:
            shutil.rmtree(scratch, ignore_errors=True)
    report.stats = dict(covered)
    report.seconds = time.monotonic() - started
    return report
