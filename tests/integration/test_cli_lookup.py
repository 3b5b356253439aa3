"""Lookups on the command line, as real processes: `broker serve`, `broker lookup-key serve`,
`broker node publish --selector`, `broker node lookup` (a document, a person, a file), counts,
and the lookup keys `broker keys` issues and deals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.sandbox import ADMIN_ID, AUDITOR_ID, LOOKUP_ID, REPO_POLICIES, Deployment

from .helpers import witness_process
from .test_cli import broker
from .test_crash import free_port, start_serve

pytestmark = pytest.mark.integration


def start_key_service(d: Deployment, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / "lookup.port"
    with (tmp / "lookup.log").open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli.main", "lookup-key", "serve", "--id", LOOKUP_ID,
             "--keys-dir", str(d.keys_dir), "--data-dir", str(tmp / "lookup"),
             "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError((tmp / "lookup.log").read_text())
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def test_node_lookup_and_publish_with_selectors(deployment: Deployment, tmp_path: Path) -> None:
    port = free_port()
    serve = start_serve(deployment, port, tmp_path / "broker.log")
    keysvc, kport = start_key_service(deployment, tmp_path)
    common = ["--broker", f"127.0.0.1:{port}", "--keys-dir", str(deployment.keys_dir)]
    node = [
        *common,
        "--state-dir",
        str(tmp_path / "nodes"),
        "--lookup-service",
        f"127.0.0.1:{kport}",
    ]
    witness = witness_process([*common, "--state-dir", str(tmp_path / "nodes")])
    try:
        admin = ["--admin", ADMIN_ID, *common]
        assert (
            broker(
                "admin", "policy", "activate", str(REPO_POLICIES), "--reason", "go", *admin
            ).returncode
            == 0
        )
        assert broker("admin", "agency", "sign-registry", *admin).returncode == 0
        r = broker(
            "node", "publish", "--agency", "FR-NCB", *node, "--kind", "interpol.red",
            "--purpose", "locate_arrest", "--section",
            "identity=family_name: DUPONT\nforename: Jean\ndate_of_birth: 1981-03-14\n"
            "nationality: FR", "--section", "case_facts=offence: robbery\nsummary: robbery",
            "--section", "judicial=warrant_reference: W1\nissuing_authority: Paris court\n"
            "penalty_threshold: 2 years", "--json",
            "--selector", "travel_document=FR;P;19FR23456",
            "--selector", "person=DUPONT, Jean;14.03.1981",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        notice_id = json.loads(r.stdout)["notice_id"]

        r = broker(
            "node", "lookup", "--agency", "IT-BORDER", *node, "--purpose", "border_control",
            "--document", "fr:passport:19 FR 23456", "--person", "Jean Dupont;1981-03-14",
            "--document", "IT:P:YA0000000", "--json",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        results = json.loads(r.stdout)
        # in the order: documents, persons, selectors, the file's lines
        assert [(x["selector"], x["hit"]) for x in results] == [
            ("travel_document", True),
            ("travel_document", False),
            ("person", True),
        ]
        assert results[0]["hits"][0]["notice_id"] == notice_id
        assert results[0]["hits"][0]["release"] == "action"
        assert results[0]["notified"] == [notice_id]

        listing = tmp_path / "passengers.txt"
        listing.write_text(
            "# flight AZ 123\ntravel_document=FR;P;19FR23456\n\nvin=1HGCM82633A004352\n"
        )
        r = broker(
            "node", "lookup", "--agency", "DE-BKA", *node, "--purpose", "investigation",
            "--file", str(listing), "--no-notify",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "HIT     travel_document  FR:P:19FR23456" in r.stdout
        assert "no hit  vin" in r.stdout
        assert "2 selector(s), 1 hit(s)" in r.stdout
        assert "contact FR-NCB" in r.stdout  # not notified: told whom to contact

        bad = listing.with_name("bad.txt")
        bad.write_text("imei=490154203237519\n")
        r = broker(
            "node", "lookup", "--agency", "DE-BKA", *node, "--purpose", "x", "--file", str(bad)
        )
        assert r.returncode == 2 and "bad.txt:1: the IMEI's check digit is wrong" in r.stderr

        # The auditor sees the query patterns, from the verified log.
        audit = ["--as", f"auditor:{AUDITOR_ID}", *common]
        for _ in range(100):
            r = broker("audit", "lookups", *audit, "--repeat-at", "2", "--json")
            assert r.returncode == 0, r.stderr
            queriers = {q["querier"]: q for q in json.loads(r.stdout)["queriers"]}
            if {"IT-BORDER", "DE-BKA"} <= set(queriers):
                break
            time.sleep(0.2)  # the next checkpoint covers the newest lookups
        assert queriers["IT-BORDER"]["hits"] >= 2 and queriers["IT-BORDER"]["lookups"] == 1
        assert queriers["DE-BKA"]["purposes"] == [["investigation", 1]]
        r = broker("audit", "lookups", *audit)
        assert "IT-BORDER" in r.stdout and "lookup(s) in" in r.stdout, r.stderr

        plain = [*common, "--state-dir", str(tmp_path / "nodes")]
        r = broker("node", "replies", "--agency", "FR-NCB", *plain, "--open", "--json")
        assert r.returncode == 0, r.stderr
        assert "reply.lookup_hit" in r.stdout
    finally:
        witness.terminate()  # type: ignore[attr-defined]
        witness.wait(timeout=30)  # type: ignore[attr-defined]
        for proc in (serve, keysvc):
            proc.send_signal(signal.SIGTERM)
        for proc in (serve, keysvc):
            proc.wait(timeout=20)
    r = broker("lookup-key", "counts", "--data-dir", str(tmp_path / "lookup"), "--json")
    assert r.returncode == 0, r.stderr
    counts = {c["agency"]: c["elements"] for c in json.loads(r.stdout)}
    assert counts["IT-BORDER"] >= 3 and counts["FR-NCB"] >= 2 and counts["DE-BKA"] >= 2


def test_node_case_registers_subjects_and_names_the_other_case(
    deployment: Deployment, tmp_path: Path
) -> None:
    port = free_port()
    serve = start_serve(deployment, port, tmp_path / "broker.log")
    keysvc, kport = start_key_service(deployment, tmp_path)
    common = ["--broker", f"127.0.0.1:{port}", "--keys-dir", str(deployment.keys_dir)]
    state = ["--state-dir", str(tmp_path / "nodes")]
    node = [*common, *state, "--lookup-service", f"127.0.0.1:{kport}"]
    witness = witness_process([*common, *state])
    try:
        admin = ["--admin", ADMIN_ID, *common]
        activate = ("admin", "policy", "activate", str(REPO_POLICIES), "--reason", "go")
        assert broker(*activate, *admin).returncode == 0
        assert broker("admin", "agency", "sign-registry", *admin).returncode == 0
        r = broker(
            "node", "case", "--agency", "FR-NCB", *node, "--facts", "FR case 17",
            "--person", "DUPONT, Jean;14.03.1981", "--json",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        first = json.loads(r.stdout)
        assert first["matches"] == []
        r = broker(
            "node", "case", "--agency", "DE-BKA", *node, "--facts", "DE case 4",
            "--person", "Jean Dupont;1981-03-14",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert f"FR-NCB works on the same subject (case {first['case']}): told" in r.stdout
        r = broker("node", "case", "--agency", "DE-BKA", *node, "--facts", "x")
        assert r.returncode != 0 and "give at least one" in r.stderr
    finally:
        witness.terminate()
        witness.wait(timeout=30)
        keysvc.send_signal(signal.SIGTERM)
        keysvc.wait(timeout=30)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
