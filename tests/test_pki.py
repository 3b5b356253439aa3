"""Deployment CA, certificates and agency key statements on disk (broker.pki)."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from broker import pki
from broker.core.envelope_suite import ed25519_public_key
from broker.core.identity import (
    IdentityError,
    Party,
    newest_key_statements,
    party_from_certificate,
    verify_key_statement,
)
from broker.errors import FailedPrecondition, InvalidArgument, NotFound
from broker.v1 import notice_pb2


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def ca_root(root: Path) -> Path:
    pki.generate_ca(root)
    return root


@pytest.fixture
def ca_cert(ca_root: Path) -> x509.Certificate:
    return pki.load_ca_certificate(ca_root / "ca" / "ca.pem")


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# --------------------------------------------------------------------------- CA


def test_generate_ca_files_and_modes(root: Path) -> None:
    path = pki.generate_ca(root)
    assert path == root / "ca" / "ca.pem"
    assert mode(root / "ca" / "ca.key") == 0o600
    assert mode(path) == 0o644
    assert mode(root / "ca") == 0o700
    assert mode(root) == 0o700
    cert, key = pki.load_ca(root)
    cert.verify_directly_issued_by(cert)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.rfc4514_string() == "CN=Sealed Notice Broker CA"
    assert not list(root.rglob(".*tmp*"))


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_modes_do_not_depend_on_umask(root: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        pki.generate_ca(root)
        files = pki.issue_agency(root, "FR-NCB")
    finally:
        os.umask(old)
    assert mode(root / "ca" / "ca.key") == 0o600
    assert mode(root / "ca" / "ca.pem") == 0o644
    for private in (files.key, files.signing_key, files.encryption_key):
        assert mode(private) == 0o600
    for public in (files.cert, files.ca_cert, files.statement):
        assert mode(public) == 0o644
    assert mode(files.directory) == 0o700


def test_generate_ca_refuses_to_overwrite(ca_root: Path) -> None:
    before = tree(ca_root)
    with pytest.raises(FailedPrecondition, match="refusing to overwrite"):
        pki.generate_ca(ca_root)
    assert tree(ca_root) == before


def test_generate_ca_validates_arguments(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        pki.generate_ca(root, now=datetime(2026, 1, 1))
    with pytest.raises(InvalidArgument, match="days"):
        pki.generate_ca(root, days=0)
    with pytest.raises(InvalidArgument, match="CA name"):
        pki.generate_ca(root, name="")
    assert not root.exists()


def test_load_ca_errors(root: Path) -> None:
    with pytest.raises(NotFound, match="broker keys init"):
        pki.load_ca(root)
    pki.generate_ca(root)
    key = root / "ca" / "ca.key"
    key.chmod(0o640)
    with pytest.raises(FailedPrecondition, match=re.escape(f"chmod 600 {key}")):
        pki.load_ca(root)
    key.chmod(0o600)
    other = pki.generate_ca(root / "other")
    key.write_bytes((other.parent / "ca.key").read_bytes())
    with pytest.raises(FailedPrecondition, match="does not match"):
        pki.load_ca(root)


def test_load_ca_certificate_errors(ca_root: Path) -> None:
    with pytest.raises(NotFound):
        pki.load_ca_certificate(ca_root / "nope.pem")
    garbage = ca_root / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(FailedPrecondition, match="not a PEM certificate"):
        pki.load_ca_certificate(garbage)
    leaf = pki.issue_certificate(ca_root, Party("admin", "ops1")).cert
    with pytest.raises(FailedPrecondition, match="not a CA certificate"):
        pki.load_ca_certificate(leaf)


# --------------------------------------------------------------------------- certificates


@pytest.mark.parametrize("kind", ["agency", "admin", "auditor", "broker"])
def test_issue_certificate(ca_root: Path, ca_cert: x509.Certificate, kind: str) -> None:
    party = Party(kind, "P-1")  # type: ignore[arg-type]
    files = pki.issue_certificate(ca_root, party)
    plural = {"agency": "agencies", "admin": "admins", "auditor": "auditors", "broker": "brokers"}
    assert files.directory == ca_root / plural[kind] / "P-1"
    assert files == pki.load_party(ca_root, party)
    assert mode(files.directory) == 0o700
    assert mode(files.key) == 0o600
    assert mode(files.cert) == 0o644
    assert files.ca_cert.read_bytes() == (ca_root / "ca" / "ca.pem").read_bytes()

    cert = load_cert(files.cert)
    cert.verify_directly_issued_by(ca_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [party.uri()]
    assert party_from_certificate(cert) == party
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    dns, ips = pki.certificate_names(cert)
    if kind == "broker":
        assert (dns, ips) == (["localhost"], ["127.0.0.1", "::1"])
    else:
        assert (dns, ips) == ([], [])


def test_issue_certificate_names(ca_root: Path) -> None:
    files = pki.issue_certificate(
        ca_root,
        Party("broker", "b1"),
        dns_names=["Broker.Example", "broker.example"],
        ip_addresses=["10.0.0.1"],
    )
    assert pki.certificate_names(load_cert(files.cert)) == (
        ["broker.example"],
        ["10.0.0.1"],
    )


@pytest.mark.parametrize(
    ("dns", "ip"), [(["bad name"], []), (["-x.example"], []), ([""], []), ([], ["300.1.1.1"])]
)
def test_issue_rejects_bad_names_and_writes_nothing(
    ca_root: Path, dns: list[str], ip: list[str]
) -> None:
    before = tree(ca_root)
    with pytest.raises(InvalidArgument):
        pki.issue_certificate(ca_root, Party("broker", "b1"), dns_names=dns, ip_addresses=ip)
    with pytest.raises(InvalidArgument):
        pki.issue_agency(ca_root, "FR-NCB", dns_names=dns, ip_addresses=ip)
    assert tree(ca_root) == before


def test_issue_without_ca(root: Path) -> None:
    with pytest.raises(NotFound, match="broker keys init"):
        pki.issue_certificate(root, Party("admin", "ops1"))


def test_certificate_validity(root: Path) -> None:
    t = datetime(2030, 6, 1, tzinfo=UTC)
    pki.generate_ca(root, now=t, days=30)
    cert = load_cert(pki.issue_certificate(root, Party("admin", "a"), now=t, days=825).cert)
    ca = load_cert(root / "ca" / "ca.pem")
    assert cert.not_valid_before_utc == t - pki.CLOCK_SKEW
    # Never outlives its CA.
    assert cert.not_valid_after_utc == ca.not_valid_after_utc == t + timedelta(days=30)
    cert = load_cert(pki.issue_certificate(root, Party("admin", "b"), now=t, days=7).cert)
    assert cert.not_valid_after_utc == t + timedelta(days=7)
    with pytest.raises(FailedPrecondition, match="CA certificate has expired"):
        pki.issue_certificate(root, Party("admin", "c"), now=t + timedelta(days=31))


def test_reissue_keeps_previous_generation(ca_root: Path) -> None:
    party = Party("admin", "ops1")
    first = pki.issue_certificate(ca_root, party)
    old_cert, old_key = first.cert.read_bytes(), first.key.read_bytes()
    serial = load_cert(first.cert).serial_number
    second = pki.issue_certificate(ca_root, party)
    assert second.cert.read_bytes() != old_cert
    archive = first.directory / "old" / f"cert-{serial:x}"
    assert (archive / "tls.pem").read_bytes() == old_cert
    assert (archive / "tls.key").read_bytes() == old_key
    assert mode(archive / "tls.key") == 0o600
    assert mode(archive) == 0o700
    assert pki.load_party(ca_root, party) == second


def test_tls_handshake_between_issued_parties(ca_root: Path) -> None:
    """The certificates work for mutual TLS, with OpenSSL's strict X.509 checks."""
    broker = pki.issue_certificate(ca_root, Party("broker", "broker"))
    agency = pki.issue_agency(ca_root, "FR-NCB")

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for ctx, files in ((server_ctx, broker), (client_ctx, agency)):
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(files.ca_cert)
        ctx.load_cert_chain(files.cert, files.key)

    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, conn in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    conn.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    peer = server.getpeercert()
    assert peer is not None
    assert ("URI", "urn:broker:agency:FR-NCB") in peer["subjectAltName"]
    server_peer = client.getpeercert()
    assert server_peer is not None
    assert ("URI", "urn:broker:broker:broker") in server_peer["subjectAltName"]


# --------------------------------------------------------------------------- loading parties


def test_load_party_refuses_insecure_key(ca_root: Path) -> None:
    party = Party("auditor", "audit-eu")
    files = pki.issue_certificate(ca_root, party)
    for insecure in (0o644, 0o640, 0o604, 0o660):
        files.key.chmod(insecure)
        with pytest.raises(FailedPrecondition, match=re.escape(f"Run: chmod 600 {files.key}")):
            pki.load_party(ca_root, party)
    files.key.chmod(0o600)
    assert pki.load_party(ca_root, party) == files


def test_load_party_errors(ca_root: Path) -> None:
    party = Party("admin", "ops1")
    with pytest.raises(NotFound, match="broker keys issue admin ops1"):
        pki.load_party(ca_root, party)
    files = pki.issue_certificate(ca_root, party)
    files.cert.unlink()
    with pytest.raises(NotFound, match="TLS certificate not found"):
        pki.load_party(ca_root, party)
    files = pki.issue_certificate(ca_root, party)
    other = pki.issue_certificate(ca_root, Party("admin", "ops2"))
    files.key.write_bytes(other.key.read_bytes())
    with pytest.raises(FailedPrecondition, match="does not match"):
        pki.load_party(ca_root, party)
    files = pki.issue_certificate(ca_root, party)
    files.cert.write_bytes(other.cert.read_bytes())
    files.key.write_bytes(other.key.read_bytes())
    with pytest.raises(FailedPrecondition, match="names urn:broker:admin:ops2"):
        pki.load_party(ca_root, party)


# --------------------------------------------------------------------------- agencies


def test_issue_agency(ca_root: Path, ca_cert: x509.Certificate) -> None:
    files = pki.issue_agency(ca_root, "FR-NCB")
    assert files.directory == ca_root / "agencies" / "FR-NCB"
    for private in (files.key, files.signing_key, files.encryption_key):
        assert mode(private) == 0o600
    assert mode(files.statement) == 0o644
    assert len(files.signing_key.read_bytes()) == 32
    assert len(files.encryption_key.read_bytes()) == 32

    creds = pki.load_agency(ca_root, "FR-NCB")
    assert creds.files == files
    assert creds.agency_id == "FR-NCB"
    keys = verify_key_statement(
        creds.statement, pki.ca_public_key(ca_cert), now_ms(), expected_agency="FR-NCB"
    )
    assert keys.serial == 1
    cert = load_cert(files.cert)
    assert keys.not_before_ms == int(cert.not_valid_before_utc.timestamp() * 1000)
    # Short-lived: DEFAULT_STATEMENT_DAYS from the certificate's start, within its validity.
    assert keys.not_after_ms == keys.not_before_ms + pki.DEFAULT_STATEMENT_DAYS * 86_400_000
    assert keys.not_after_ms < int(cert.not_valid_after_utc.timestamp() * 1000)

    # The raw keys are what libsodium expects: a signing seed and a crypto_box secret key.
    signing = SigningKey(creds.signing_seed)
    assert signing.verify_key.encode() == keys.signing_key
    signing.verify_key.verify(signing.sign(b"header"))
    box_key = PrivateKey(creds.encryption_private_key)
    assert box_key.public_key.encode() == keys.encryption_key
    sealed = SealedBox(PublicKey(keys.encryption_key)).encrypt(b"wrap body")
    assert SealedBox(box_key).decrypt(sealed) == b"wrap body"


def test_rotation_increments_serial_and_archives(ca_root: Path, ca_cert: x509.Certificate) -> None:
    first = pki.load_agency(ca_root, pki.issue_agency(ca_root, "FR-NCB").directory.name)
    pki.issue_agency(ca_root, "FR-NCB")
    second = pki.load_agency(ca_root, "FR-NCB")
    ca = pki.ca_public_key(ca_cert)
    k1 = verify_key_statement(first.statement, ca, now_ms())
    k2 = verify_key_statement(second.statement, ca, now_ms())
    assert (k1.serial, k2.serial) == (1, 2)
    assert k1.signing_key != k2.signing_key
    assert k1.encryption_key != k2.encryption_key
    old = second.files.directory / "old" / "statement-1"
    assert (old / "signing.key").read_bytes() == first.signing_seed
    assert (old / "encryption.key").read_bytes() == first.encryption_private_key
    assert mode(old / "encryption.key") == 0o600
    assert newest_key_statements([first.statement, second.statement], ca, now_ms())["FR-NCB"] == k2

    pki.issue_agency(ca_root, "FR-NCB")
    assert pki.unverified_statement_serial(pki.load_agency(ca_root, "FR-NCB").statement) == 3
    assert sorted(p.name for p in (second.files.directory / "old").iterdir()) == [
        "statement-1",
        "statement-2",
    ]
    # The serial never repeats, even if the agency's files are lost: the CA logs it.
    second.files.statement.unlink()
    pki.issue_agency(ca_root, "FR-NCB")
    assert pki.unverified_statement_serial(pki.load_agency(ca_root, "FR-NCB").statement) == 4
    shutil.rmtree(second.files.directory)
    pki.issue_agency(ca_root, "FR-NCB")
    assert pki.unverified_statement_serial(pki.load_agency(ca_root, "FR-NCB").statement) == 5
    log = (ca_root / "ca" / "issued.log").read_text().splitlines()
    assert [line.split()[3] for line in log] == [f"statement={n}" for n in range(1, 6)]
    assert all(line.split()[1] == "urn:broker:agency:FR-NCB" for line in log)
    assert mode(ca_root / "ca" / "issued.log") == 0o644


def test_load_agency_refuses_insecure_or_wrong_keys(ca_root: Path) -> None:
    files = pki.issue_agency(ca_root, "FR-NCB")
    other = pki.issue_agency(ca_root, "DE-BKA")
    for path in (files.signing_key, files.encryption_key):
        original = path.read_bytes()
        path.chmod(0o644)
        with pytest.raises(FailedPrecondition, match=re.escape(f"chmod 600 {path}")):
            pki.load_agency(ca_root, "FR-NCB")
        path.chmod(0o600)
        path.write_bytes(original[:31])
        with pytest.raises(FailedPrecondition, match="must be 32 raw bytes"):
            pki.load_agency(ca_root, "FR-NCB")
        path.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes_raw())
        with pytest.raises(FailedPrecondition, match="do not match its statement"):
            pki.load_agency(ca_root, "FR-NCB")
        path.write_bytes(original)
    pki.load_agency(ca_root, "FR-NCB")

    original = files.statement.read_bytes()
    files.statement.write_bytes(other.statement.read_bytes())
    with pytest.raises(FailedPrecondition, match="expected agency 'FR-NCB'"):
        pki.load_agency(ca_root, "FR-NCB")
    files.statement.write_bytes(b"\xff\xff")
    with pytest.raises(FailedPrecondition, match="not a SignedKeyStatement"):
        pki.load_agency(ca_root, "FR-NCB")
    files.statement.unlink()
    with pytest.raises(NotFound, match="key statement not found"):
        pki.load_agency(ca_root, "FR-NCB")
    files.statement.write_bytes(original)
    pki.load_agency(ca_root, "FR-NCB")
    with pytest.raises(InvalidArgument):
        pki.load_agency(ca_root, "../FR-NCB")


def test_load_agency_expired_statement_says_rotate(root: Path) -> None:
    t = datetime.now(UTC) - timedelta(days=10)
    pki.generate_ca(root, now=t)
    pki.issue_agency(root, "FR-NCB", now=t, days=1)
    with pytest.raises(FailedPrecondition, match=r"expired.*broker keys rotate agency FR-NCB"):
        pki.load_agency(root, "FR-NCB")
    assert pki.load_agency(root, "FR-NCB", now=t).agency_id == "FR-NCB"


def test_statement_from_another_ca_is_refused(ca_root: Path) -> None:
    pki.issue_agency(ca_root, "FR-NCB")
    other_root = ca_root / "elsewhere"
    pki.generate_ca(other_root)
    forged = pki.issue_agency(other_root, "FR-NCB")
    target = ca_root / "agencies" / "FR-NCB"
    for name in ("statement.bin", "signing.key", "encryption.key"):
        (target / name).write_bytes((forged.directory / name).read_bytes())
    with pytest.raises(FailedPrecondition, match="signature does not verify"):
        pki.load_agency(ca_root, "FR-NCB")


def test_sign_key_statement(ca_root: Path) -> None:
    _, ca_key = pki.load_ca(ca_root)
    now = now_ms()
    st = notice_pb2.KeyStatement(
        agency_id="X",
        signing_key=ed25519_public_key(bytes(range(32))),
        encryption_key=bytes(32),
        serial=9,
        not_before_ms=now - 1,
        not_after_ms=now + 60_000,
    )
    signed = pki.sign_key_statement(ca_key, st)
    assert signed.statement == st.SerializeToString(deterministic=True)
    assert verify_key_statement(signed, ca_key.public_key(), now).serial == 9
    with pytest.raises(InvalidArgument, match="P-256"):
        pki.sign_key_statement(ec.generate_private_key(ec.SECP384R1()), st)
    with pytest.raises(IdentityError):
        verify_key_statement(signed, ec.generate_private_key(ec.SECP256R1()).public_key(), now)


def test_read_statements(ca_root: Path) -> None:
    assert pki.read_statements(ca_root) == []
    pki.issue_agency(ca_root, "FR-NCB")
    pki.issue_agency(ca_root, "DE-BKA")
    pki.issue_agency(ca_root, "DE-BKA")
    pki.issue_certificate(ca_root, Party("admin", "ops1"))
    statements = pki.read_statements(ca_root)
    ids = [notice_pb2.KeyStatement.FromString(s.statement).agency_id for s in statements]
    assert ids == ["DE-BKA", "FR-NCB"]  # current ones only, not old/
    (ca_root / "agencies" / "FR-NCB" / "statement.bin").write_bytes(b"junk")
    with pytest.raises(FailedPrecondition, match="not a SignedKeyStatement"):
        pki.read_statements(ca_root)


def test_list_parties(ca_root: Path) -> None:
    assert pki.list_parties(ca_root) == []
    pki.issue_agency(ca_root, "FR-NCB")
    pki.issue_certificate(ca_root, Party("broker", "broker"))
    pki.issue_certificate(ca_root, Party("admin", "ops1"))
    (ca_root / "agencies" / "not an id").mkdir()
    assert pki.list_parties(ca_root) == [
        Party("admin", "ops1"),
        Party("agency", "FR-NCB"),
        Party("broker", "broker"),
    ]


# --------------------------------------------------------------------------- revocation


def test_revoke(ca_root: Path) -> None:
    assert pki.revoked_parties(ca_root) == frozenset()
    pki.issue_agency(ca_root, "FR-NCB")
    party = Party("agency", "FR-NCB")
    pki.revoke(ca_root, party)
    pki.revoke(ca_root, party)
    pki.revoke(ca_root, Party("admin", "ops1"))
    path = ca_root / "ca" / "revoked.txt"
    assert mode(path) == 0o644
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == ["urn:broker:agency:FR-NCB", "urn:broker:admin:ops1"]
    assert pki.revoked_parties(ca_root) == {"urn:broker:agency:FR-NCB", "urn:broker:admin:ops1"}
    before = tree(ca_root)
    with pytest.raises(FailedPrecondition, match="is revoked"):
        pki.issue_agency(ca_root, "FR-NCB")
    with pytest.raises(FailedPrecondition, match="is revoked"):
        pki.issue_certificate(ca_root, Party("admin", "ops1"))
    assert tree(ca_root) == before


def test_revoked_file_is_strict(ca_root: Path) -> None:
    path = ca_root / "ca" / "revoked.txt"
    path.write_text(
        "# comment\n\nurn:broker:agency:A\n  urn:broker:admin:B  \nurn:broker:agncy:C\n"
    )
    with pytest.raises(FailedPrecondition, match=r"revoked.txt:5"):
        pki.revoked_parties(ca_root)
    path.write_text("urn:broker:agency:A\n  urn:broker:admin:B  ")
    assert pki.revoked_parties(ca_root) == {"urn:broker:agency:A", "urn:broker:admin:B"}
    pki.revoke(ca_root, Party("auditor", "C"))
    assert pki.revoked_parties(ca_root) == {
        "urn:broker:agency:A",
        "urn:broker:admin:B",
        "urn:broker:auditor:C",
    }


def test_revoke_without_ca(root: Path) -> None:
    with pytest.raises(NotFound, match="broker keys init"):
        pki.revoke(root, Party("agency", "A"))


@pytest.fixture
def _no_tmp_left(ca_root: Path) -> Iterator[None]:
    yield
    assert not [p for p in ca_root.rglob("*") if ".tmp" in p.name]


@pytest.mark.usefixtures("_no_tmp_left")
def test_atomic_writes_leave_no_temporaries(ca_root: Path) -> None:
    pki.issue_agency(ca_root, "FR-NCB")
    pki.issue_agency(ca_root, "FR-NCB")
    pki.revoke(ca_root, Party("admin", "x"))


def test_renew_statement_keeps_the_keys_with_a_higher_serial(ca_root: Path) -> None:
    pki.issue_agency(ca_root, "FR-NCB")
    first = pki.load_agency(ca_root, "FR-NCB")
    renewed = pki.renew_statement(ca_root, "FR-NCB", statement_days=7)
    again = pki.load_agency(ca_root, "FR-NCB")
    assert again.files == renewed
    assert again.signing_seed == first.signing_seed
    assert again.encryption_private_key == first.encryption_private_key
    old = pki.unverified_statement_serial(first.statement)
    new = pki.unverified_statement_serial(again.statement)
    assert new == old + 1
    window = notice_pb2.KeyStatement.FromString(again.statement.statement)
    assert window.not_after_ms - window.not_before_ms == 7 * 86_400_000
