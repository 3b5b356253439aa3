"""The broker's transparency-log key on disk (broker.pki)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from broker import pki
from broker.core.auditing import log_origin
from broker.core.checkpoint import SIG_TYPE_ED25519
from broker.core.identity import Party
from broker.errors import FailedPrecondition, NotFound


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_broker_certificate_comes_with_a_log_key(tmp_path: Path) -> None:
    pki.generate_ca(tmp_path)
    pki.issue_certificate(tmp_path, Party("broker", "b1"))
    directory = tmp_path / "brokers" / "b1"
    key, pub = directory / pki.LOG_KEY, directory / pki.LOG_PUB
    assert mode(key) == 0o600 and len(key.read_bytes()) == 32
    assert mode(pub) == 0o644
    signer = pki.load_log_signer(tmp_path, "b1")
    verifier = pki.load_log_verifier(pub)
    assert signer.name == verifier.name == log_origin("b1") == "sealed-notice-broker/b1"
    assert verifier == signer.verifier and verifier.sig_type == SIG_TYPE_ED25519
    seed = key.read_bytes()
    pki.issue_certificate(tmp_path, Party("broker", "b1"))  # rotation keeps the log key
    assert key.read_bytes() == seed
    pub.unlink()
    assert pki.ensure_log_key(tmp_path, "b1") == pub
    assert pki.load_log_verifier(pub) == verifier
    pki.issue_certificate(tmp_path, Party("auditor", "a1"))
    assert not (tmp_path / "auditors" / "a1" / pki.LOG_KEY).exists()


def test_a_missing_or_exposed_log_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="broker keys issue broker b2"):
        pki.load_log_signer(tmp_path, "b2")
    pki.ensure_log_key(tmp_path, "b2")
    key = tmp_path / "brokers" / "b2" / pki.LOG_KEY
    key.chmod(0o644)
    with pytest.raises(FailedPrecondition, match="chmod 600"):
        pki.load_log_signer(tmp_path, "b2")
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    with pytest.raises(FailedPrecondition, match="not a verifier key"):
        pki.load_log_verifier(bad)
