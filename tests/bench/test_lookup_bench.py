"""`broker bench lookup`, run tiny: it builds the index, runs every mode and reports
(figures are reported, never asserted)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from broker.bench import lookup

pytestmark = pytest.mark.integration


def test_prefill_writes_the_store_schema(tmp_path: Path) -> None:
    db = tmp_path / "broker.sqlite3"
    lookup.prefill(db, 1001)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM lookup_tokens").fetchone()[0] == 1001
        assert conn.execute("SELECT COUNT(*) FROM lookup_notices").fetchone()[0] == 251
        assert conn.execute("SELECT MAX(ref) FROM lookup_tokens").fetchone()[0] == 251
    finally:
        conn.close()


def test_a_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    lines: list[str] = []
    report = lookup.run(
        tokens=2000,
        seconds=0.5,
        concurrency=4,
        batch=5,
        rate=40,
        paced_seconds=0.5,
        directory=tmp_path,
        progress=lines.append,
    )
    data = report.as_dict()
    json.dumps(data)
    assert data["tokens"] == 2000 and data["disk_bytes"] > 0
    assert data["single"]["lookups"] > 0 and data["batched"]["lookups"] > 0
    assert data["paced"]["lookups"] + data["paced"]["errors"] == 20
    assert set(data["goals"]) >= {"single_met", "paced_met"}
    assert "lookups/s" in report.text() and "MB per million tokens" in report.text()
    assert list(tmp_path.iterdir()) == []  # the scratch directory is gone
