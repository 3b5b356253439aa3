"""`make fuzz`: every fuzz target under atheris for FUZZ_SECONDS each (default 30).

    python -m tests.fuzz.run [--seconds N] [--target NAME ...] [--work DIR]

Each target runs in its own process, seeded with its valid inputs, its corpus kept in
DIR/corpus/<target> (default .fuzz/, ignored by git) so later runs start where the last
stopped. A crashing input is copied to tests/fuzz/regressions/<target>/: `make test` then
fails on it until the parser is fixed, and the file stays as a regression test. Prints one
line per target and exits 1 if any target found something.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.fuzz import targets

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = Path(__file__).resolve().parent / "regressions"


def fuzz_one(name: str, seconds: int, work: Path) -> tuple[int, list[Path], str]:
    """Run one target; return (executions, findings kept, last status line)."""
    corpus = work / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in targets.TARGETS[name].seeds():
        (corpus / f"seed-{hashlib.sha256(seed).hexdigest()[:16]}").write_bytes(seed)
    findings = work / "findings" / name
    findings.mkdir(parents=True, exist_ok=True)
    before = set(findings.iterdir())
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.atheris_main",
        name,
        f"-max_total_time={seconds}",
        f"-artifact_prefix={findings}/",
        "-rss_limit_mb=4096",
        "-timeout=30",
        "-print_final_stats=1",
        str(corpus),
    ]
    started = time.monotonic()
    proc = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    cov = re.findall(r"\bcov: (\d+) ft: (\d+)", proc.stderr)
    kept = []
    for found in sorted(set(findings.iterdir()) - before):
        data = found.read_bytes()
        target_dir = REGRESSIONS / name
        target_dir.mkdir(parents=True, exist_ok=True)
        dest = target_dir / f"{found.name.split('-')[0]}-{hashlib.sha256(data).hexdigest()[:12]}"
        shutil.copyfile(found, dest)
        kept.append(dest)
    status = "ok" if proc.returncode == 0 and not kept else f"exit {proc.returncode}"
    if proc.returncode != 0 and not kept:
        status += ": " + (proc.stderr.strip().splitlines() or ["no output"])[-1]
    elapsed = time.monotonic() - started
    edges = f", coverage {cov[-1][0]} edges {cov[-1][1]} features" if cov else ""
    return int(runs[-1]) if runs else 0, kept, f"{status} in {elapsed:.0f} s{edges}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make fuzz", description=__doc__)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 30)))
    parser.add_argument("--target", action="append", choices=sorted(targets.TARGETS))
    parser.add_argument("--work", type=Path, default=ROOT / ".fuzz")
    args = parser.parse_args(argv)
    names = args.target or sorted(targets.TARGETS)
    failed = 0
    for name in names:
        runs, kept, status = fuzz_one(name, args.seconds, args.work)
        print(f"{name:20} {runs:>9} inputs  {status}", flush=True)
        for path in kept:
            print(f"  finding kept as a regression test: {path.relative_to(ROOT)}", flush=True)
        failed += bool(kept) or not status.startswith("ok")
    print(f"{len(names) - failed} of {len(names)} targets clean", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
