"""The benchmark's generators and a short run (figures are reported, never asserted)."""

from __future__ import annotations

import json

from broker.bench import policy

from .helpers import POLICIES, shipped


def test_generated_registry_and_notices_are_valid_and_deterministic() -> None:
    b = shipped()
    registry = policy.generate_registry(b, 200)
    assert len(registry) == 200 and len({a.id for a in registry}) == 200
    assert {"suspended", "revoked"} <= {a.status for a in registry}
    assert policy.generate_registry(b, 200) == registry
    notices = policy.generate_notices(b, registry, 100)  # check_notice passes for each
    assert len({n.kind for n in notices}) >= 12
    assert policy.generate_notices(b, registry, 100) == notices


def test_short_run_reports_engine_and_cedar_side_by_side() -> None:
    report = policy.run(agencies=30, seconds=0.2, notices=20, policy_dir=POLICIES, pin=False)
    data = report.as_dict()
    json.dumps(data)
    assert set(data["engine"]) == {
        "engine masks",
        "engine audience",
        "engine audience (list)",
        "engine explained",
    }
    assert all(f["decisions"] > 0 for f in data["engine"].values())
    if isinstance(data["cedarpy"], dict):
        assert data["agreement"]["disagreements"] == 0
    assert "decisions/s" in report.text()
