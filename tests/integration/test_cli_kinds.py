"""`broker node publish` for every kind the catalogue holds, without dead ends: a Yellow
notice, a missing-person SIS alert, a diffusion, a Black notice and a return alert from
the real CLI against a real broker; the catalogue's content_fields and required header
fields refused with the field and the flag named; `admin policy explain` for every kind
with one section; admin output as one JSON schema; rollback by a version's prefix;
`broker status`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.sandbox import ADMIN_ID, AUDITOR_ID, REPO_POLICIES, Deployment

from .helpers import witness_process
from .test_crash import free_port, start_serve

pytestmark = pytest.mark.integration

YELLOW_IDENTITY = "family_name: MUELLER\nforename: Lena\ndate_of_birth: 2011-07-02\n"


@dataclass
class Cli:
    env: dict[str, str]
    node: list[str]

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "broker.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )

    def ok(self, *args: str) -> object:
        r = self(*args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if r.stdout.startswith(("{", "[")) else r.stdout

    def publish(self, *args: str) -> dict[str, object]:
        got = self.ok("node", "publish", "--agency", "FR-NCB", *self.node, "--json", *args)
        assert isinstance(got, dict)
        return got


@pytest.fixture
def cli(deployment: Deployment, tmp_path: Path) -> Iterator[Cli]:
    port = free_port()
    proc = start_serve(deployment, port, tmp_path / "broker.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "BROKER_"))}
    env.update(BROKER_TARGET=f"127.0.0.1:{port}", BROKER_KEYS=str(deployment.keys_dir))
    node = ["--state-dir", str(tmp_path / "nodes")]
    c = Cli(env, node)
    admin = ["--admin", ADMIN_ID]
    c.ok("admin", "policy", "activate", str(REPO_POLICIES), "--reason", "go", *admin)
    c.ok("admin", "agency", "sign-registry", *admin)
    keys = ["--broker", env["BROKER_TARGET"], "--keys-dir", str(deployment.keys_dir)]
    witness = witness_process([*keys, *node])
    try:
        yield c
    finally:
        witness.terminate()  # type: ignore[attr-defined]
        witness.wait(timeout=30)  # type: ignore[attr-defined]
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_each_kind_publishable_from_the_cli(cli: Cli, tmp_path: Path) -> None:
    identity = tmp_path / "identity.txt"
    identity.write_text(YELLOW_IDENTITY + "date_missing: 2026-11-30\n")
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker.cli.main",
            "node",
            "listen",
            "--agency",
            "DE-BKA",
            *cli.node,
            "--count",
            "4",
            "--timeout",
            "120",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
    )
    try:
        yellow = cli.publish(
            "--kind", "interpol.yellow", "--purpose", "locate_missing",
            "--data-subject", "victim", "--section", f"identity=@{identity}",
            "--handling", "H2", "--expires-at", "2030-01-31",
        )  # fmt: skip
        missing = cli.publish(
            "--kind", "sis.art32", "--purpose", "locate_missing", "--data-subject", "victim",
            "--field", "identity.family_name=ROSSI", "--field", "identity.forename=Anna",
            "--section", "action=place under protection", "--expires-in-days", "30",
        )  # fmt: skip
        diffusion = cli.publish(
            "--kind", "interpol.diffusion", "--purpose", "investigation",
            "--data-subject", "witness", "--evaluation", "B2", "--to", "DE-BKA",
            "--section", "case_facts=summary: a witness to a robbery", "--deny-country", "IT",
        )  # fmt: skip
        black = cli.publish(  # its one data subject category ("other") is the default
            "--kind", "interpol.black", "--purpose", "identification",
            "--section", "case_facts=an unidentified body, found 2026-11-01",
        )  # fmt: skip
        ret = cli.publish(  # a return alert: the border agency is the one that may act
            "--kind", "sis.return", "--purpose", "return",
            "--field", "identity.family_name=DOE", "--section", "judicial=decision 2026/17",
            "--section", "action=escort to the border",
        )  # fmt: skip
        assert "IT-BORDER" in ret["audience"]  # type: ignore[operator]
        out, err = listener.communicate(timeout=120)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    assert listener.returncode == 0, err
    got = {row["notice_id"]: row for row in map(json.loads, out.splitlines()) if "kind" in row}
    assert set(got) == {str(p["notice_id"]) for p in (yellow, missing, diffusion, black)}, (
        out
    )  # the return alert is not for DE-BKA
    y = got[str(yellow["notice_id"])]
    assert (y["kind"], y["data_subject"], y["handling_codes"]) == (
        "interpol.yellow",
        "victim",
        ["H2"],
    )
    assert y["expires_at"] == "2030-01-31T00:00:00Z"
    assert y["sections"]["identity"].startswith("family_name: MUELLER")
    m = got[str(missing["notice_id"])]
    assert m["sections"]["identity"] == "family_name: ROSSI\nforename: Anna\n"
    assert m["data_subject"] == "victim"
    d = got[str(diffusion["notice_id"])]
    assert (d["data_subject"], d["evaluation"]) == ("witness", "B2")
    assert got[str(black["notice_id"])]["data_subject"] == "other"


def test_refusals_name_the_field_and_the_flag(cli: Cli) -> None:
    base = ["node", "publish", "--agency", "FR-NCB", *cli.node]
    # The catalogue's content_fields, checked before sealing: "zzz" holds no field.
    r = cli(*base, "--kind", "interpol.yellow", "--purpose", "locate_missing",
            "--data-subject", "victim", "--section", "identity=zzz")  # fmt: skip
    assert r.returncode == 2
    assert "interpol.yellow content: section 'identity' lacks family_name, forename" in r.stderr
    assert "--field SECTION.FIELD=VALUE" in r.stderr
    assert "[en: family_name = Family name; forename = Forename; date_of_birth = " in r.stderr
    # --lang: the catalogue's labels of the fields named, beside their identifiers.
    r = cli(*base, "--kind", "interpol.yellow", "--purpose", "locate_missing", "--lang", "fr",
            "--data-subject", "victim", "--field", "identity.forename=Lena",
            "--field", "identity.date_of_birth=2011-07-02")  # fmt: skip
    assert r.returncode == 2 and "section 'identity' lacks family_name, date_missing" in r.stderr
    assert "[fr: family_name = Nom de famille; date_missing = Date de disparition]" in r.stderr
    r = cli(*base, "--kind", "interpol.yellow", "--purpose", "locate_missing",
            "--section", f"identity={YELLOW_IDENTITY}date_missing: 2026-11-30")  # fmt: skip
    assert r.returncode == 2 and "interpol.yellow needs --data-subject: one of victim, other" in (
        r.stderr
    )
    r = cli(*base, "--kind", "interpol.diffusion", "--purpose", "investigation",
            "--data-subject", "suspect", "--section", "case_facts=x")  # fmt: skip
    assert r.returncode == 2
    assert "interpol.diffusion needs an evaluation" in r.stderr and "[--evaluation" in r.stderr
    assert "evaluation = Evaluation (source and information)]" in r.stderr
    r = cli(*base, "--kind", "interpol.black", "--purpose", "identification",
            "--evaluation", "D1", "--section", "case_facts=x")  # fmt: skip
    assert r.returncode == 2 and "'D1' is not an evaluation" in r.stderr  # argparse: usage


def test_policy_explain_for_every_kind_with_one_section(cli: Cli) -> None:
    catalogue = tomllib.loads((REPO_POLICIES / "catalogue.toml").read_text())
    admin = ["--admin", ADMIN_ID]
    for kind, spec in catalogue["kinds"].items():
        section = spec["sections"][-1]
        got = cli.ok(
            "admin", "policy", "explain", *admin, "--originator", "FR-NCB",
            "--recipient", "DE-BKA", "--kind", kind, "--section", section, "--json",
        )  # fmt: skip
        assert isinstance(got, dict)
        assert [d["section"] for d in got["decisions"]] == [section], (kind, got)
        for d in got["decisions"]:
            assert all(isinstance(o, dict) and "kind" in o for o in d["obligations"]), d
        if "data_subjects" in spec:
            assert f"data_subject={spec['data_subjects'][0]}" in got["assumed"], got
    text = cli.ok(
        "admin", "policy", "explain", *admin, "--originator", "FR-NCB",
        "--recipient", "DE-BKA", "--kind", "interpol.yellow", "--section", "photos",
    )  # fmt: skip
    assert "assumed: purpose=locate_missing, data_subject=victim, sections+=identity" in str(text)
    assert "SECTION" in str(text) and "photos" in str(text)


def test_admin_json_schema_rollback_by_prefix_and_status(cli: Cli, tmp_path: Path) -> None:
    admin = ["--admin", ADMIN_ID]
    draft = tmp_path / "draft"
    shutil.copytree(REPO_POLICIES, draft)
    with (draft / "catalogue.toml").open("a") as f:
        f.write("\n# a second version\n")
    second = cli.ok("admin", "policy", "activate", str(draft), "--reason", "v2", *admin, "--json")
    assert isinstance(second, dict) and isinstance(second["sequence"], int)
    history = cli.ok("admin", "policy", "history", *admin, "--json")
    assert isinstance(history, dict)
    entries = history["entries"]
    assert all(isinstance(e["sequence"], int) for e in entries)
    assert all(isinstance(e["activated_at_ms"], int) for e in entries)
    assert all(e["activated_at"].endswith("Z") and "T" in e["activated_at"] for e in entries)
    first = next(e["version"] for e in entries if e["version"] != second["version"])
    text = cli.ok("admin", "policy", "history", *admin)
    assert "ACTIVATED_AT" in str(text) and entries[0]["activated_at"] in str(text)
    r = cli("admin", "policy", "rollback", "", "--reason", "x", *admin)
    assert r.returncode == 2 and "give a policy version" in r.stderr
    r = cli("admin", "policy", "rollback", "zz", "--reason", "x", *admin)
    assert r.returncode == 2 and "no policy version starts with 'zz'" in r.stderr
    back = cli.ok("admin", "policy", "rollback", first[:8], "--reason", "back", *admin, "--json")
    assert isinstance(back, dict) and back["version"] == first
    actions = cli.ok("admin", "actions", *admin, "--json")
    assert isinstance(actions, dict)
    signed = [a for a in actions["actions"] if a["action"] == "agency.sign"]
    assert len(signed) == 4 and all(json.loads(a["detail"]) == {"revision": 1} for a in signed)
    assert not [a for a in actions["actions"] if a["action"] == "agency.update"]
    status = cli.ok("status", "--as", f"auditor:{AUDITOR_ID}", "--json")
    assert isinstance(status, dict) and status["ok"] is True, status
    assert status["log"]["size"] > 0 and isinstance(status["queues"]["pending"], int)
    as_admin = cli.ok("status", "--as", f"admin:{ADMIN_ID}", "--json")
    assert isinstance(as_admin, dict) and as_admin["policy"]["version"] == first, as_admin
    env = dict(cli.env, BROKER_AGENCY="FR-NCB")
    r = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok   policy    {first}" in r.stdout and "(signed activation)" in r.stdout
    assert "ok   identity  urn:broker:agency:FR-NCB" in r.stdout
