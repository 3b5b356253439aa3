"""deploy/: the Grafana dashboard and the Prometheus alert rules name only metrics a real
broker's /metrics serves; the rules pass promtool (when installed) and our own structural
check; the systemd unit passes systemd-analyze verify (when installed); the Dockerfile
installs from requirements.lock, which pins every dependency."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from broker.server.opsport import OpsPort

from .conftest import Running
from .helpers import RED_SECTIONS
from .test_operations import fetch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\b(broker_[a-z0-9_]+)\b")
DURATION = re.compile(r"^[0-9]+[smhd]$")


def dashboard_exprs() -> list[str]:
    doc = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert doc["title"] and doc["uid"] and doc["panels"]
    exprs = []
    for panel in doc["panels"]:
        assert panel["title"] and panel["targets"], panel
        exprs += [t["expr"] for t in panel["targets"]]
    exprs += [v["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return exprs


def alert_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    rules: list[dict[str, object]] = []
    for group in doc["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        rules += group["rules"]
    return rules


def served_names(text: str) -> set[str]:
    return {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_dashboard_and_alerts_name_only_served_metrics(broker: Running) -> None:
    ops = await OpsPort.bind("127.0.0.1:0")
    ops.attach(broker.app)
    try:
        async with broker.node("FR-NCB") as fr:
            await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
        status, text = await fetch(ops.port, "/metrics")
    finally:
        await ops.close()
    assert status == 200
    served = served_names(text)
    used: set[str] = set()
    for expr in dashboard_exprs() + [str(r["expr"]) for r in alert_rules()]:
        used |= set(METRIC.findall(expr))
    assert len(used) >= 15
    missing = sorted(used - served)
    assert not missing, f"not served by /metrics: {missing}"


def test_alert_rules_are_well_formed() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), names
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert isinstance(rule["alert"], str) and re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert DURATION.match(str(rule["for"])), rule
        labels, notes = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in ("warning", "critical")
        assert isinstance(notes, dict) and notes["summary"] and notes["description"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
    promtool = shutil.which("promtool")
    if promtool is None:
        return  # Debian's "prometheus" package has it; the structure is checked above
    done = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus-alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "broker.service").read_text()
    assert "ExecStart=/opt/broker/bin/broker serve --config /etc/broker/broker.toml" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # The executable must exist for verify: point it at this checkout's broker command.
    here = Path(sys.executable).parent / "broker"
    copy = tmp_path / "broker.service"
    good = unit.replace("/opt/broker/bin/broker", str(here))
    copy.write_text(good)
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr
    # And verify does catch a mistake (so the check above can fail).
    copy.write_text(good.replace("Restart=on-failure", "Restart=sometimes"))
    bad = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "restart specifier" in bad.stdout + bad.stderr


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_dockerfile_builds_from_the_lock_file() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "pip install -c requirements.lock ." in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    assert all(
        line.split()[1].startswith("python:3.11-")
        for line in text.splitlines()
        if line.startswith("FROM")
    )
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = version
    unpinned = [d for d in project["dependencies"] if _name(d) not in pins]
    assert not unpinned, unpinned
