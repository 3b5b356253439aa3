"""`broker keys ...` end to end through broker.cli.main.main."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from broker import pki
from broker.cli.main import main
from broker.core.identity import Party


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def show_json(capsys: pytest.CaptureFixture[str], keys: Path) -> dict[str, Any]:
    code, out, _ = run(capsys, "keys", "show", "--dir", str(keys), "--json")
    assert code == 0
    result: dict[str, Any] = json.loads(out)
    return result


def test_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    d = str(keys)

    code, out, err = run(capsys, "keys", "init", "--dir", d)
    assert (code, err) == (0, "")
    assert f"wrote {keys / 'ca' / 'ca.key'} (0600)" in out
    assert f"wrote {keys / 'brokers' / 'broker' / 'tls.key'} (0600)" in out
    assert "issued urn:broker:broker:broker" in out

    for kind, ident in (("agency", "FR-NCB"), ("agency", "DE-BKA"), ("admin", "ops1")):
        code, out, err = run(capsys, "keys", "issue", kind, ident, "--dir", d)
        assert (code, err) == (0, "")
        assert f"issued urn:broker:{kind}:{ident}" in out
    assert "key statement serial 1" not in out  # admins have no statement
    code, out, _ = run(capsys, "keys", "issue", "auditor", "audit-eu", "--dir", d, "--days", "30")
    assert code == 0

    code, out, err = run(capsys, "keys", "rotate", "agency", "FR-NCB", "--dir", d)
    assert (code, err) == (0, "")
    assert "rotated urn:broker:agency:FR-NCB" in out
    assert "key statement serial 2" in out
    assert f"wrote {keys / 'agencies' / 'FR-NCB' / 'signing.key'} (0600)" in out
    assert (keys / "agencies" / "FR-NCB" / "old" / "statement-1" / "signing.key").is_file()

    code, out, _ = run(capsys, "keys", "revoke", "admin", "ops1", "--dir", d)
    assert code == 0
    assert "revoked urn:broker:admin:ops1" in out
    code, out, _ = run(capsys, "keys", "revoke", "admin", "ops1", "--dir", d)
    assert code == 0
    assert "already revoked" in out

    info = show_json(capsys, keys)
    assert info["ca"]["subject"] == "CN=Sealed Notice Broker CA"
    assert info["revoked"] == ["urn:broker:admin:ops1"]
    by_uri = {p["uri"]: p for p in info["parties"]}
    assert sorted(by_uri) == [
        "urn:broker:admin:ops1",
        "urn:broker:agency:DE-BKA",
        "urn:broker:agency:FR-NCB",
        "urn:broker:auditor:audit-eu",
        "urn:broker:broker:broker",
    ]
    assert by_uri["urn:broker:admin:ops1"]["revoked"] is True
    fr = by_uri["urn:broker:agency:FR-NCB"]
    assert fr["statement"]["serial"] == 2
    assert fr["statement"]["valid"] is True
    assert len(bytes.fromhex(fr["statement"]["signing_key"])) == 32
    assert by_uri["urn:broker:agency:DE-BKA"]["statement"]["serial"] == 1
    assert by_uri["urn:broker:broker:broker"]["dns"] == ["localhost"]
    assert "statement" not in by_uri["urn:broker:broker:broker"]

    code, out, _ = run(capsys, "keys", "show", "--dir", d)
    assert code == 0
    lines = out.splitlines()
    assert any("urn:broker:agency:FR-NCB" in ln and "serial 2" in ln and "ok" in ln for ln in lines)
    assert any("urn:broker:admin:ops1" in ln and "REVOKED" in ln for ln in lines)

    # What the other pieces load works.
    creds = pki.load_agency(keys, "FR-NCB")
    assert pki.unverified_statement_serial(creds.statement) == 2
    assert len(pki.read_statements(keys)) == 2
    pki.load_party(keys, Party("broker", "broker"))


def test_default_dir_is_data_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "keys", "init", "--broker-id", "broker-1")
    assert code == 0
    assert (tmp_path / "data" / "keys" / "brokers" / "broker-1" / "tls.pem").is_file()
    assert "data/keys/ca/ca.pem" in out
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "keys").st_mode) == 0o700


def test_init_twice_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "k")
    assert run(capsys, "keys", "init", "--dir", d)[0] == 0
    before = (tmp_path / "k" / "ca" / "ca.key").read_bytes()
    code, out, err = run(capsys, "keys", "init", "--dir", d)
    assert code == 2
    assert out == ""
    assert "broker: error: a CA already exists" in err
    assert (tmp_path / "k" / "ca" / "ca.key").read_bytes() == before


def test_init_validates_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "k"
    code, _, err = run(capsys, "keys", "init", "--dir", str(d), "--broker-id", "bad id")
    assert code == 2
    assert "invalid id 'bad id'" in err
    code, _, err = run(capsys, "keys", "init", "--dir", str(d), "--dns", "not a name")
    assert code == 2
    assert "invalid DNS name" in err
    assert not d.exists()


def test_init_with_names_and_rotate_keeps_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "k")
    code, _, _ = run(
        capsys, "keys", "init", "--dir", d, "--dns", "broker.example", "--ip", "192.0.2.7"
    )
    assert code == 0
    assert run(capsys, "keys", "rotate", "broker", "broker", "--dir", d)[0] == 0
    cert = pki.load_certificate(tmp_path / "k" / "brokers" / "broker" / "tls.pem")
    assert pki.certificate_names(cert) == (["broker.example"], ["192.0.2.7"])


def test_errors_are_actionable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "k")
    code, _, err = run(capsys, "keys", "issue", "agency", "FR-NCB", "--dir", d)
    assert code == 2
    assert "broker keys init" in err
    assert run(capsys, "keys", "init", "--dir", d)[0] == 0

    code, _, err = run(capsys, "keys", "rotate", "agency", "FR-NCB", "--dir", d)
    assert code == 2
    assert "broker keys issue agency FR-NCB" in err

    code, _, err = run(capsys, "keys", "issue", "agency", "../etc", "--dir", d)
    assert code == 2
    assert "invalid id" in err
    assert not (tmp_path / "etc").exists()

    ca_key = tmp_path / "k" / "ca" / "ca.key"
    ca_key.chmod(0o644)
    code, _, err = run(capsys, "keys", "issue", "agency", "FR-NCB", "--dir", d)
    assert code == 2
    assert f"chmod 600 {ca_key}" in err
    ca_key.chmod(0o600)

    assert run(capsys, "keys", "revoke", "agency", "FR-NCB", "--dir", d)[0] == 0
    code, _, err = run(capsys, "keys", "issue", "agency", "FR-NCB", "--dir", d)
    assert code == 2
    assert "is revoked" in err

    code, _, err = run(capsys, "keys", "show", "--dir", str(tmp_path / "missing"))
    assert code == 2
    assert "broker keys init" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["keys"],
        ["keys", "issue", "agent", "X"],
        ["keys", "issue", "agency"],
        ["keys", "issue", "agency", "X", "--days", "0"],
        ["keys", "init", "--ca-days", "many"],
        ["keys", "revoke", "agency"],
    ],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_show_reports_broken_statement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "k"
    assert run(capsys, "keys", "init", "--dir", str(keys))[0] == 0
    assert run(capsys, "keys", "issue", "agency", "FR-NCB", "--dir", str(keys))[0] == 0
    assert run(capsys, "keys", "issue", "agency", "DE-BKA", "--dir", str(keys))[0] == 0
    fr = keys / "agencies" / "FR-NCB"
    (fr / "statement.bin").write_bytes(
        (keys / "agencies" / "DE-BKA" / "statement.bin").read_bytes()
    )
    info = show_json(capsys, keys)
    entry = next(p for p in info["parties"] if p["id"] == "FR-NCB")
    assert entry["statement"]["valid"] is False
    assert "expected agency" in entry["statement"]["error"]
    code, out, _ = run(capsys, "keys", "show", "--dir", str(keys))
    assert code == 0
    assert "statement:" in out
