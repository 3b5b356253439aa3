"""`broker node request ...` and `broker node requests` end to end against a real
`broker serve`: a request issued, received, refused with grounds; the listing on both
sides with ISO times, deadlines, overdue (judged at a given time) and labels in French
and Arabic; a wrong party's step refused with a clear message."""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.sandbox import ADMIN_ID, AUDITOR_ID, REPO_POLICIES, Deployment

from .helpers import witness_process
from .test_cli import broker
from .test_crash import free_port, start_serve

pytestmark = pytest.mark.integration


def ok(r: subprocess.CompletedProcess[str]) -> Any:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.startswith(("{", "[")) else r.stdout


def test_request_commands(deployment: Deployment, tmp_path: Path) -> None:
    port = free_port()
    proc = start_serve(deployment, port, tmp_path / "broker.log")
    common = ["--broker", f"127.0.0.1:{port}", "--keys-dir", str(deployment.keys_dir)]
    node = [*common, "--state-dir", str(tmp_path / "nodes")]
    admin = ["--admin", ADMIN_ID, *common]

    def node_cmd(agency: str, *args: str) -> subprocess.CompletedProcess[str]:
        return broker("node", *args, "--agency", agency, *node)

    try:
        ok(broker("admin", "policy", "activate", str(REPO_POLICIES), "--reason", "go", *admin))
        ok(broker("admin", "agency", "sign-registry", *admin))
        witness = witness_process(node)
        issued = ok(
            node_cmd(
                "FR-NCB",
                "request",
                "issue",
                "--kind",
                "request.eio",
                "--to",
                "DE-BKA",
                "--urgent",
                "--section",
                "request=hear the witness",
                "--section",
                "measures=hearing_witness",
                "--section",
                "legal_basis=fraud",
                "--section",
                "judicial=juge d'instruction",
                "--json",
            )
        )
        rid = issued["notice_id"]
        ok(node_cmd("DE-BKA", "request", "receive", rid))
        (row,) = ok(node_cmd("DE-BKA", "requests", "--json"))
        assert (row["state"], row["priority"], row["deadline"]) == (
            "received",
            "urgent",
            "decision",
        )
        received = datetime.fromisoformat(row["steps"][1]["at"].replace("Z", "+00:00"))
        due = datetime.fromisoformat(row["deadline_at"].replace("Z", "+00:00"))
        assert due - received == timedelta(hours=24)  # urgent EIO: 24 hours (seconds shown)
        assert row["deadline_at"].endswith("Z") and not row["overdue"]
        # Overdue at a later time, on both sides, in French.
        later = (due + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        for agency in ("FR-NCB", "DE-BKA"):
            text = ok(node_cmd(agency, "requests", "--as-of", later, "--lang", "fr"))
            assert "Décision d'enquête européenne" in text
            assert "Urgente" in text and "Reçue" in text and "EN RETARD" in text
        # The executing authority refuses; the issuer sees the grounds in Arabic.
        wrong = node_cmd("FR-NCB", "request", "recognise", rid)
        assert wrong.returncode == 1
        assert "PERMISSION_DENIED" in wrong.stderr and "executing authority" in wrong.stderr
        ok(node_cmd("DE-BKA", "request", "refuse", rid, "--ground", "eio.11.1.d"))
        text = ok(node_cmd("FR-NCB", "requests", "--lang", "ar"))
        assert "مرفوض" in text and "عدم جواز المحاكمة عن الفعل نفسه مرتين" in text
        (row,) = ok(node_cmd("FR-NCB", "requests", "--json", "--lang", "es"))
        assert (row["state_label"], row["grounds"]) == ("Denegada", ["eio.11.1.d"])
        assert ok(node_cmd("FR-NCB", "requests", "--open")) == "no requests\n"
        bad = node_cmd("FR-NCB", "requests", "--as-of", "yesterday")
        assert bad.returncode != 0 and "2026-12-31T12:00:00Z" in bad.stderr
        # An auditor proves from the verified log who acted when.
        audit = ["--as", f"auditor:{AUDITOR_ID}", *common]
        report = ok(broker("audit", "requests", "--notice", rid, "--json", *audit))
        (timeline,) = report["requests"]
        assert [(x["step"], x["actor"]) for x in timeline["steps"]] == [
            ("issue", "FR-NCB"),
            ("receive", "DE-BKA"),
            ("refuse", "DE-BKA"),
        ]
        refuse = timeline["steps"][2]
        assert (refuse["due"], refuse["late"], refuse["grounds"]) == (
            "decision",
            False,
            ["eio.11.1.d"],
        )
        assert refuse["due_at"].endswith("Z")
        text = ok(broker("audit", "requests", *audit))
        assert "refuse" in text and "in time: decision due" in text
    finally:
        if "witness" in locals():
            witness.terminate()
            witness.wait(timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
