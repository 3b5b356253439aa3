"""`broker keys issue/rotate/renew --pq`: the hybrid suite's keys on disk and in statements."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from broker import pki
from broker.cli.main import main
from broker.core import hybrid as hy
from broker.errors import FailedPrecondition, NotFound
from broker.v1 import notice_pb2


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


def statement_of(keys: Path, agency: str) -> notice_pb2.KeyStatement:
    signed = pki.read_statement(keys / "agencies" / agency / pki.STATEMENT)
    return notice_pb2.KeyStatement.FromString(signed.statement)


def test_issue_rotate_renew_with_pq_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    d = str(keys)
    assert run(capsys, "keys", "init", "--dir", d)[0] == 0
    code, out = run(capsys, "keys", "issue", "agency", "FR-NCB", "--dir", d, "--pq")
    assert code == 0 and "pq-signing.key (0600)" in out and "pq-encryption.key (0600)" in out
    assert run(capsys, "keys", "issue", "agency", "DE-BKA", "--dir", d)[0] == 0

    fr = pki.load_agency(keys, "FR-NCB")
    assert fr.hybrid and len(fr.signing_key) == hy.SIGNING_KEY_SIZE
    st = statement_of(keys, "FR-NCB")
    assert st.pq_signing_key == hy.mldsa_public_key(fr.pq_signing_seed)
    assert st.pq_encryption_key == hy.kem_public_key_bytes(fr.pq_encryption_private_key)
    mode = stat.S_IMODE(os.stat(keys / "agencies" / "FR-NCB" / pki.PQ_SIGNING_KEY).st_mode)
    assert mode == 0o600
    de = pki.load_agency(keys, "DE-BKA")
    assert not de.hybrid and de.signing_key == de.signing_seed
    assert not statement_of(keys, "DE-BKA").pq_signing_key

    # rotate keeps the PQ keys (new ones), renew re-signs the same ones
    assert run(capsys, "keys", "rotate", "agency", "FR-NCB", "--dir", d)[0] == 0
    rotated = pki.load_agency(keys, "FR-NCB")
    assert rotated.hybrid and rotated.pq_signing_seed != fr.pq_signing_seed
    assert run(capsys, "keys", "renew", "FR-NCB", "--dir", d)[0] == 0
    renewed = pki.load_agency(keys, "FR-NCB")
    assert renewed.pq_signing_seed == rotated.pq_signing_seed
    assert statement_of(keys, "FR-NCB").serial == 3

    # a classical agency migrates: rotate --pq
    assert run(capsys, "keys", "rotate", "agency", "DE-BKA", "--dir", d, "--pq")[0] == 0
    assert pki.load_agency(keys, "DE-BKA").hybrid

    code, out = run(capsys, "keys", "show", "--dir", d, "--json")
    assert code == 0 and '"hybrid"' in out


def test_load_refuses_pq_keys_that_do_not_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    d = str(keys)
    run(capsys, "keys", "init", "--dir", d)
    run(capsys, "keys", "issue", "agency", "FR-NCB", "--dir", d, "--pq")
    path = keys / "agencies" / "FR-NCB" / pki.PQ_SIGNING_KEY
    path.write_bytes(bytes(32))
    with pytest.raises(FailedPrecondition, match=r"post-quantum keys .* do not match"):
        pki.load_agency(keys, "FR-NCB")
    path.unlink()  # one of the two files missing
    with pytest.raises(NotFound, match="post-quantum signing key not found"):
        pki.load_agency(keys, "FR-NCB")
