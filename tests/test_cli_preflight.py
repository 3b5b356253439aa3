"""broker/cli/preflight.py offline: the address a --broker value names, and the local
certificate's checks at a given time (the online checks run in
tests/integration/test_cli_failures.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from broker import pki
from broker.cli.preflight import (
    ConnectionProblem,
    Endpoint,
    LocalCertificateProblem,
    check_local,
    parse_target,
)
from broker.core.identity import Party


@pytest.mark.parametrize(
    ("target", "want"),
    [
        ("127.0.0.1:7443", Endpoint("127.0.0.1", 7443)),
        ("broker.example:443", Endpoint("broker.example", 443)),
        ("[::1]:7443", Endpoint("::1", 7443)),
        ("10.0.0.1:7443,10.0.0.2:7443", Endpoint("10.0.0.1", 7443)),  # replicas: the first
    ],
)
def test_targets(target: str, want: Endpoint) -> None:
    assert parse_target(target) == want
    assert str(want) in (target, f"[{want.host}]:{want.port}") or "," in target


@pytest.mark.parametrize("target", ["", "localhost", ":7443", "host:port", "host:0", "h:70000"])
def test_bad_targets_say_what_to_write(target: str) -> None:
    with pytest.raises(ConnectionProblem, match=r"must be HOST:PORT, e\.g\. 127\.0\.0\.1:7443"):
        parse_target(target)


def test_the_local_certificate_at_its_edges(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    pki.generate_ca(keys)
    party = Party("auditor", "dpo")
    files = pki.issue_certificate(keys, party, days=10)
    cert = pki.load_certificate(files.cert)
    assert check_local(keys, party, now=cert.not_valid_before_utc) == files
    assert check_local(keys, party, now=cert.not_valid_after_utc) == files
    with pytest.raises(LocalCertificateProblem, match=r"expired at .*broker keys issue auditor"):
        check_local(keys, party, now=cert.not_valid_after_utc + timedelta(seconds=1))
    with pytest.raises(LocalCertificateProblem, match=r"is not valid before .*clock"):
        check_local(keys, party, now=cert.not_valid_before_utc - timedelta(seconds=1))
    other = tmp_path / "other"
    pki.generate_ca(other)
    (keys / "ca" / "ca.pem").write_bytes((other / "ca" / "ca.pem").read_bytes())
    with pytest.raises(LocalCertificateProblem, match=r"was not issued by the CA in .*ca/ca\.pem"):
        check_local(keys, party, now=cert.not_valid_before_utc)
