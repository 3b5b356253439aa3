"""`broker bench suites` through the real CLI, tiny: both suites measured in one run."""

from __future__ import annotations

import json

import pytest

from broker.cli.main import main
from broker.core import hybrid as hy

pytestmark = pytest.mark.integration


def test_bench_suites_reports_both_suites_and_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "suites", "--json", "--recipients", "2", "--rounds", "2", "--notices", "2"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "broker-bench-suites/1"
    sizes = report["envelope"]["sizes"]
    assert sizes["hybrid"]["header_signature_bytes"] == hy.SIGNATURE_SIZE
    assert sizes["classical"]["header_signature_bytes"] == 64
    assert sizes["hybrid"]["wrap_bytes"] > hy.ENC_SIZE > sizes["classical"]["wrap_bytes"]
    assert report["envelope"]["ratios"]["envelope_bytes"] > 1
    e2e = report["end_to_end"]
    assert set(e2e["latency_ms"]) == {"classical", "hybrid"}
    assert all(v > 0 for v in e2e["notices_per_s"].values())
    assert e2e["ratios"]["throughput"] > 0
