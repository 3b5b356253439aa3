"""`broker keys` for lookup-key services: an OPRF key kept across re-issues, and t-of-n shares."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from broker import lookup_keys, pki
from broker.cli.main import main
from broker.core import lookup, oprf
from broker.core.identity import Party


def keys_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_issue_and_deal_lookup_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    d = str(keys)
    assert keys_cli(capsys, "keys", "init", "--dir", d)[0] == 0
    r = keys_cli(capsys, "keys", "issue", "lookup", "oprf", "--dir", d)
    assert r[0] == 0, r[2]
    directory = keys / "lookups" / "oprf"
    assert stat.S_IMODE(os.stat(directory / "oprf.key").st_mode) == 0o600
    secret = (directory / "oprf.key").read_bytes()
    ca_key = pki.load_ca_certificate(keys / "ca" / "ca.pem").public_key()
    signed = lookup_keys.read_signed(directory / "oprf.pub")
    now = int(time.time() * 1000)
    key = lookup.verify_lookup_key(signed, ca_key, Party("lookup", "oprf"), now)  # type: ignore[arg-type]
    assert key.public_key == oprf.public_key(secret) and key.serial == 1
    # Re-issuing the certificate keeps the OPRF key (the index depends on it).
    assert keys_cli(capsys, "keys", "rotate", "lookup", "oprf", "--dir", d)[0] == 0
    assert (directory / "oprf.key").read_bytes() == secret
    assert lookup_keys.read_statement(directory / "oprf.pub").serial == 2

    ids = ["h1", "h2", "h3"]
    for sid in ids:
        assert (
            keys_cli(capsys, "keys", "issue", "lookup", sid, "--no-lookup-key", "--dir", d)[0] == 0
        )
    r = keys_cli(capsys, "keys", "deal-lookup-shares", *ids, "--threshold", "2", "--dir", d)
    assert r[0] == 0, r[2]
    shares = [lookup_keys.read_statement(keys / "lookups" / sid / "oprf.pub") for sid in ids]
    assert [s.share_index for s in shares] == [1, 2, 3]
    assert {(s.threshold, s.holders, s.group_public_key) for s in shares} == {
        (2, 3, shares[0].group_public_key)
    }
    again = keys_cli(capsys, "keys", "deal-lookup-shares", *ids, "--threshold", "2", "--dir", d)
    assert again[0] == 2 and "dealt once" in again[2]
