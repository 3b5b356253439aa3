"""`broker bench attachments`, run tiny: a plain copy and the sealed move in one run, every
figure reported (never asserted beyond being there), the plaintext verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.bench import attachments
from broker.cli.main import main

pytestmark = pytest.mark.integration


def test_a_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    lines: list[str] = []
    report = attachments.run(3 * 1024 * 1024 + 5, 256 * 1024, tmp_path, lines.append)
    assert report.verified
    assert report.copy_mb_s > 0 and report.end_to_end_mb_s > 0
    assert set(report.steps_mb_s) == {
        "seal (ciphertext fsynced)",
        "publish, upload, sign",
        "download and check",
        "open (plaintext fsynced)",
    }
    assert set(report.peak_rss_mb) == {"broker process", "nodes process (both)"}
    assert all(v > 0 for v in report.peak_rss_mb.values())
    text = report.text()
    assert "plain file copy" in text and "end to end" in text and "peak RSS" in text
    assert list(tmp_path.iterdir()) == []  # the scratch directory is gone


def test_the_command_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "attachments", "--size", "1", "--chunk-kib", "64", "--dir",
                 str(tmp_path), "--json"])  # fmt: skip
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["size_bytes"] == 1024 * 1024 and data["chunk_bytes"] == 64 * 1024
    assert data["verified"] is True


def test_bad_sizes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "attachments", "--size", "0"]) == 2
    assert "--size must be at least 1 MiB" in capsys.readouterr().err
