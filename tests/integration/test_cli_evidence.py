"""`broker node attach`, `broker node fetch` and `broker audit custody` from the command line
(in a thread of this process), against a real broker over mutual TLS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from broker.cli.main import main
from broker.sandbox import AUDITOR_ID
from tests.adversarial.kit import agencies, until
from tests.content import sections_for
from tests.integration.conftest import Running

pytestmark = pytest.mark.integration

# --section NAME=TEXT with the catalogue's 'field: value' lines (tests/content.py)
SECTIONS = [
    arg
    for name, text in sections_for("interpol.red").items()
    for arg in ("--section", f"{name}={text.decode()}")
]


def node_args(b: Running, agency: str) -> list[str]:
    return [
        "--agency", agency, "--broker", b.target, "--keys-dir", str(b.deployment.keys_dir),
        "--state-dir", str(b.deployment.root / "nodes"),
    ]  # fmt: skip


async def test_attach_fetch_and_audit_custody(
    broker: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "statement.pdf"
    source.write_bytes(b"%PDF-1.7 witness statement " * 50_000)
    async with agencies(broker, "DE-BKA") as nodes:
        code = await asyncio.to_thread(
            main,
            ["node", "attach", str(source), *node_args(broker, "FR-NCB"), "--json",
             "--attach-section", "photos", "--kind", "interpol.red", "--purpose",
             "locate_arrest", "--to", "DE-BKA", *SECTIONS,
             "--chunk-size", "65536"],
        )  # fmt: skip
        out = capsys.readouterr()
        assert code == 0, out.err
        attached = json.loads(out.out)
        notice_id = attached["notice_id"]
        assert attached["chunks"] == 21
        de = nodes["DE-BKA"]
        await until(lambda: any(n.notice_id == notice_id for n in de.notices))
    target = tmp_path / "got.pdf"
    code = await asyncio.to_thread(
        main,
        ["node", "fetch", notice_id, *node_args(broker, "DE-BKA"), "--attach-section", "photos",
         "--out", str(target), "--forwarded-to", "DE-LKA-BW"],
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert target.read_bytes() == source.read_bytes()
    assert "verified against the signed header" in out.out
    assert "fetching" in out.err and "100.0%" in out.err  # the progress bar
    assert attached["plaintext_sha256"] in out.out

    audit = [
        "audit", "custody", notice_id, "--broker", broker.target, "--as",
        f"auditor:{AUDITOR_ID}", "--keys-dir", str(broker.deployment.keys_dir), "--json",
    ]  # fmt: skip
    # Until a checkpoint the witness cosigned (trust.toml asks for one) covers the four
    # links: before that the audit answers with its chain pending, or with no cosigned
    # checkpoint yet (exit 1, nothing on stdout). A loaded machine takes its time.
    report: dict[str, Any] = {}
    err = ""
    for _ in range(600):
        code = await asyncio.to_thread(main, audit)
        out = capsys.readouterr()
        err = out.err
        report = json.loads(out.out) if out.out.strip() else {}
        if code == 0 and report["chains"] and report["chains"][0]["pending"] == 0:
            break
        await asyncio.sleep(0.1)
    assert code == 0 and report["ok"], (report, err)
    assert [(x["agency"], x["action"]) for x in report["chains"][0]["links"]] == [
        ("FR-NCB", "sealed"),
        ("DE-BKA", "received"),
        ("DE-BKA", "opened"),
        ("DE-BKA", "forwarded"),
    ]


async def test_fetch_of_a_notice_never_received_says_so(
    broker: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(
        main,
        ["node", "fetch", "0b0f7c4e-1d2a-4c43-9e58-8a3c1d2e3f40", *node_args(broker, "DE-BKA"),
         "--attach-section", "photos", "--out", str(tmp_path / "x")],
    )  # fmt: skip
    assert code == 1
    assert "receive it first" in capsys.readouterr().err
