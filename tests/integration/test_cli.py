"""The `broker` command end to end: serve, admin, node publish/listen/status, validate."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.sandbox import ADMIN_ID, REPO_POLICIES, Deployment

from .helpers import witness_process
from .test_crash import free_port, start_serve

pytestmark = pytest.mark.integration


def broker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_policy_validate_offline(tmp_path: Path) -> None:
    ok = broker("admin", "policy", "validate", str(REPO_POLICIES), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    draft = tmp_path / "draft"
    shutil.copytree(REPO_POLICIES, draft)
    (draft / "rules" / "broken.toml").write_text('[[rule]]\nid = "x"\neffect = "permit"\n  x = \n')
    bad = broker("admin", "policy", "validate", str(draft))
    assert bad.returncode == 1
    assert "broken.toml:4:" in bad.stderr


def test_serve_admin_and_node_commands(deployment: Deployment, tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    proc = start_serve(
        deployment, port, tmp_path / "broker.log", metrics=f"127.0.0.1:{metrics_port}"
    )
    common = ["--broker", f"127.0.0.1:{port}", "--keys-dir", str(deployment.keys_dir)]
    node = [*common, "--state-dir", str(tmp_path / "nodes")]
    admin = ["--admin", ADMIN_ID, *common]
    try:
        r = broker("admin", "policy", "activate", str(REPO_POLICIES), "--reason", "go", *admin)
        assert r.returncode == 0, r.stderr
        r = broker("admin", "agency", "sign-registry", *admin, "--json")
        assert r.returncode == 0 and json.loads(r.stdout) == {"signed": 4}, r.stderr
        r = broker("admin", "agency", "list", *admin, "--json")
        listed = json.loads(r.stdout)
        assert {a["id"] for a in listed} == {"FR-NCB", "DE-BKA", "IT-BORDER", "EU-HUB"}
        assert all(a["signed"] and a["revision"] == 1 for a in listed)
        r = broker("admin", "agency", "list", *admin)
        assert "IT-BORDER" in r.stdout and "signed" in r.stdout and "BEGIN" not in r.stdout
        # The deployment's witness (trust.toml) cosigns checkpoints while we work.
        witness = witness_process(node)
        listener = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker.cli.main",
                "node",
                "listen",
                "--agency",
                "DE-BKA",
                "--count",
                "1",
                "--timeout",
                "60",
                "--json",
                *node,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        r = broker(
            "node",
            "publish",
            "--agency",
            "FR-NCB",
            "--kind",
            "interpol.red",
            "--purpose",
            "locate_arrest",
            "--section",
            "identity=family_name: DOE\nforename: John\ndate_of_birth: 1970-01-01\nnationality: US",
            "--section",
            "case_facts=offence: fraud\nsummary: fraud",
            "--field",
            "judicial.warrant_reference=warrant 7",
            "--field",
            "judicial.issuing_authority=Paris court",
            "--field",
            "judicial.penalty_threshold=2 years",
            "--to",
            "DE-BKA",
            "--json",
            *node,
        )
        assert r.returncode == 0, r.stderr
        published = json.loads(r.stdout)
        out, err = listener.communicate(timeout=60)
        assert listener.returncode == 0, err
        received = json.loads(out.strip().splitlines()[-1])
        assert received["notice_id"] == published["notice_id"]
        assert received["sections"]["identity"].startswith("family_name: DOE\nforename: John")
        # Checked by the node itself: the receipt's signature, and its leaf in the log once
        # a cosigned checkpoint covers it ("unverified" until then).
        deadline = time.monotonic() + 60
        while True:
            r = broker(
                "node", "status", "--agency", "FR-NCB", published["notice_id"], "--json", *node
            )
            assert r.returncode == 0, r.stderr
            report = json.loads(r.stdout)
            (row,) = report["recipients"]
            assert row["recipient"] == "DE-BKA" and report["findings"] == []
            assert row["verdict"] in ("verified", "unverified"), row
            if row["verdict"] == "verified" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert row["verdict"] == "verified", row
        # An unknown kind is refused, under the signed policy the node checks before sealing,
        # with the catalogue's explanation and a non-zero exit.
        r = broker(
            "node",
            "publish",
            "--agency",
            "FR-NCB",
            "--kind",
            "interpol.magenta",
            "--purpose",
            "x",
            "--section",
            "identity=x",
            *node,
        )
        assert r.returncode != 0 and "unknown notice kind 'interpol.magenta'" in r.stderr
        r = broker("admin", "policy", "history", *admin, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["entries"][0]["admin"] == ADMIN_ID
        # Prometheus metrics on the configured local port (broker.toml: 127.0.0.1:9464 is
        # overridden by the test harness with a free port).
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as m:
            text = m.read().decode()
        assert "broker_notices_published_total 1.0" in text
        assert 'broker_rpcs_total{code="OK",method="Publish"} 1.0' in text
        assert 'broker_rpcs_total{code="OK",method="GetDirectory"}' in text
        # An agency identity is refused by the admin commands.
        r = broker("admin", "agency", "list", "--admin", "FR-NCB", *common)
        assert r.returncode != 0
    finally:
        if "witness" in locals():
            witness.terminate()  # type: ignore[attr-defined]
            witness.wait(timeout=30)  # type: ignore[attr-defined]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
