"""Party names and CA-signed key statements (broker.core.identity)."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

import broker.core.identity as identity_module
from broker.core import bounds
from broker.core import envelope_suite as es
from broker.core.identity import (
    ID_PATTERN,
    KEY_STATEMENT_CONTEXT,
    PARTY_KINDS,
    AgencyKeys,
    IdentityError,
    Party,
    newest_key_statements,
    parse_party_uri,
    party_from_certificate,
    party_from_uri_sans,
    validate_id,
    verify_key_statement,
)
from broker.errors import InvalidArgument, Unauthenticated
from broker.v1 import notice_pb2

CA_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_CA_KEY = ec.generate_private_key(ec.SECP256R1())
NOW = 1_780_000_000_000
NOT_BEFORE = NOW - 1_000
NOT_AFTER = NOW + 86_400_000
SIGNING = es.ed25519_public_key(bytes(range(32)))  # a real key: small-order ones are refused
ENCRYPTION = bytes(range(32, 64))

ids = st.from_regex(ID_PATTERN, fullmatch=True)
kinds = st.sampled_from(PARTY_KINDS)


def statement(**overrides: object) -> notice_pb2.KeyStatement:
    fields: dict[str, object] = {
        "agency_id": "FR-NCB",
        "signing_key": SIGNING,
        "encryption_key": ENCRYPTION,
        "serial": 1,
        "not_before_ms": NOT_BEFORE,
        "not_after_ms": NOT_AFTER,
    }
    fields.update(overrides)
    return notice_pb2.KeyStatement(**fields)  # type: ignore[arg-type]


def sign_bytes(data: bytes, key: ec.EllipticCurvePrivateKey = CA_KEY) -> bytes:
    return key.sign(KEY_STATEMENT_CONTEXT + data, ec.ECDSA(hashes.SHA256()))


def signed(**overrides: object) -> notice_pb2.SignedKeyStatement:
    data = statement(**overrides).SerializeToString()
    return notice_pb2.SignedKeyStatement(statement=data, signature=sign_bytes(data))


# --------------------------------------------------------------------------- purity


def test_core_module_is_pure() -> None:
    tree = ast.parse(Path(identity_module.__file__).read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    banned = {
        "os",
        "pathlib",
        "time",
        "random",
        "secrets",
        "grpc",
        "sqlite3",
        "asyncio",
        "datetime",
    }
    assert not {m.split(".")[0] for m in modules} & banned
    allowed_broker = {"broker.errors", "broker.v1"}
    broker_imports = {m for m in modules if m.split(".")[0] == "broker"}
    assert {
        m for m in broker_imports if not m.startswith(("broker.core", *allowed_broker))
    } == set()


# --------------------------------------------------------------------------- ids and names


@pytest.mark.parametrize("good", ["a", "0", "FR-NCB", "eu.europol_hub-1", "A" * 64])
def test_validate_id_accepts(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "A" * 65, "-a", ".a", "_a", "a b", "a/b", "a:b", "é", "a\n", "\na", "١٢", "a\x00"],
)
def test_validate_id_rejects_with_clear_message(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid id") as info:
        validate_id(bad)
    assert bounds.quote(bad) in str(info.value)  # quoted, at most a short prefix


def test_party_uri_and_ordering() -> None:
    assert Party("agency", "FR-NCB").uri() == "urn:broker:agency:FR-NCB"
    assert str(Party("broker", "broker")) == "urn:broker:broker:broker"
    assert sorted([Party("broker", "a"), Party("admin", "z"), Party("admin", "b")]) == [
        Party("admin", "b"),
        Party("admin", "z"),
        Party("broker", "a"),
    ]


@pytest.mark.parametrize(("kind", "ident"), [("agent", "X"), ("Agency", "X"), ("agency", "a b")])
def test_party_construction_validates(kind: str, ident: str) -> None:
    with pytest.raises(InvalidArgument):
        Party(kind, ident)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(kinds, ids)
def test_party_uri_round_trip(kind: str, ident: str) -> None:
    party = Party(kind, ident)  # type: ignore[arg-type]
    assert parse_party_uri(party.uri()) == party
    assert party_from_uri_sans(["https://example.org/x", party.uri()]) == party


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.builds(lambda k, t: f"urn:broker:{k}:{t}", kinds, st.text())))
def test_parse_is_exact_or_refuses(text: str) -> None:
    # Either the text is the one canonical spelling of a party, or it is refused.
    try:
        party = parse_party_uri(text)
    except IdentityError:
        return
    assert party.uri() == text


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "FR-NCB",
        "urn:broker:",
        "urn:broker:agency",
        "urn:broker:agency:",
        "urn:broker:agencyFR",
        "URN:broker:agency:FR",
        "urn:BROKER:agency:FR",
        "urn:brokers:agency:FR",
        "urn:broker:Agency:FR",
        "urn:broker:agent:FR",
        "urn:broker:unknown:FR",
        " urn:broker:agency:FR",
        "urn:broker:agency:FR ",
        "urn:broker:agency:FR\n",
        "urn:broker:agency:FR:NCB",
        "urn:broker:agency:-FR",
        "urn:broker:agency:" + "A" * 65,
        "urn:broker::FR",
        "https://broker.example/agency/FR",
    ],
)
def test_parse_party_uri_rejects(uri: str) -> None:
    with pytest.raises(IdentityError):
        parse_party_uri(uri)


def test_identity_error_is_unauthenticated() -> None:
    assert issubclass(IdentityError, Unauthenticated)


def test_uri_sans_need_exactly_one_broker_uri() -> None:
    with pytest.raises(IdentityError, match="names no broker party"):
        party_from_uri_sans([])
    with pytest.raises(IdentityError, match="names no broker party"):
        party_from_uri_sans(["https://example.org/", "spiffe://x/y"])
    with pytest.raises(IdentityError, match="2 broker parties"):
        party_from_uri_sans(["urn:broker:agency:A", "urn:broker:agency:B"])
    with pytest.raises(IdentityError, match="2 broker parties"):
        party_from_uri_sans(["urn:broker:agency:A", "urn:broker:agency:A"])
    # Another spelling of the namespace still counts as a claim: ambiguous, not ignored.
    with pytest.raises(IdentityError, match="2 broker parties"):
        party_from_uri_sans(["urn:broker:agency:A", "URN:BROKER:admin:A"])
    with pytest.raises(IdentityError, match="invalid broker party URI"):
        party_from_uri_sans(["urn:broker:agency:a b"])


def _cert_with_uris(uris: list[str]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(t)
        .not_valid_after(t + dt.timedelta(days=1))
    )
    if uris:
        sans = [x509.UniformResourceIdentifier(u) for u in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_party_from_certificate() -> None:
    cert = _cert_with_uris(["urn:broker:auditor:audit-eu"])
    assert party_from_certificate(cert) == Party("auditor", "audit-eu")
    with pytest.raises(IdentityError):
        party_from_certificate(_cert_with_uris([]))
    with pytest.raises(IdentityError):
        party_from_certificate(_cert_with_uris(["urn:broker:agency:A", "urn:broker:admin:A"]))


# --------------------------------------------------------------------------- key statements


def test_verify_key_statement_happy_path() -> None:
    keys = verify_key_statement(signed(), CA_KEY.public_key(), NOW, expected_agency="FR-NCB")
    assert keys == AgencyKeys(
        agency_id="FR-NCB",
        signing_key=SIGNING,
        encryption_key=ENCRYPTION,
        serial=1,
        not_before_ms=NOT_BEFORE,
        not_after_ms=NOT_AFTER,
    )
    assert keys.party == Party("agency", "FR-NCB")
    assert verify_key_statement(signed(), CA_KEY.public_key(), NOW).agency_id == "FR-NCB"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("agency_id", "DE-BKA"),
        ("signing_key", bytes(32)),
        ("encryption_key", bytes(32)),
        ("serial", 2),
        ("not_before_ms", NOT_BEFORE - 1),
        ("not_after_ms", NOT_AFTER + 1),
    ],
)
def test_tampered_field_fails(field: str, value: object) -> None:
    good = signed()
    tampered = notice_pb2.SignedKeyStatement(
        statement=statement(**{field: value}).SerializeToString(), signature=good.signature
    )
    with pytest.raises(IdentityError, match="signature does not verify"):
        verify_key_statement(tampered, CA_KEY.public_key(), NOW)


def test_every_flipped_bit_fails() -> None:
    good = signed()
    ca = CA_KEY.public_key()
    for name in ("statement", "signature"):
        data = getattr(good, name)
        for i in range(len(data)):
            for bit in range(8):
                flipped = bytearray(data)
                flipped[i] ^= 1 << bit
                bad = notice_pb2.SignedKeyStatement()
                bad.CopyFrom(good)
                setattr(bad, name, bytes(flipped))
                with pytest.raises(IdentityError):
                    verify_key_statement(bad, ca, NOW)


def test_truncated_or_extended_fails() -> None:
    good = signed()
    ca = CA_KEY.public_key()
    for bad in (
        notice_pb2.SignedKeyStatement(statement=good.statement[:-1], signature=good.signature),
        notice_pb2.SignedKeyStatement(statement=good.statement + b"\x00", signature=good.signature),
        notice_pb2.SignedKeyStatement(statement=good.statement, signature=good.signature[:-1]),
        notice_pb2.SignedKeyStatement(statement=good.statement, signature=good.signature + b"\x00"),
        notice_pb2.SignedKeyStatement(statement=good.statement),
        notice_pb2.SignedKeyStatement(signature=good.signature),
        notice_pb2.SignedKeyStatement(statement=b"\x00" * 2048, signature=good.signature),
        notice_pb2.SignedKeyStatement(statement=good.statement, signature=b"\x30" * 200),
    ):
        with pytest.raises(IdentityError):
            verify_key_statement(bad, ca, NOW)


def test_signature_without_context_fails() -> None:
    data = statement().SerializeToString()
    raw_sig = CA_KEY.sign(data, ec.ECDSA(hashes.SHA256()))
    bad = notice_pb2.SignedKeyStatement(statement=data, signature=raw_sig)
    with pytest.raises(IdentityError, match="signature does not verify"):
        verify_key_statement(bad, CA_KEY.public_key(), NOW)


def test_wrong_ca_fails() -> None:
    with pytest.raises(IdentityError, match="signature does not verify"):
        verify_key_statement(signed(), OTHER_CA_KEY.public_key(), NOW)


def test_non_p256_ca_key_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(IdentityError, match="P-256"):
        verify_key_statement(signed(), p384, NOW)


def test_validity_window_bounds() -> None:
    ca = CA_KEY.public_key()
    s = signed()
    assert verify_key_statement(s, ca, NOT_BEFORE).serial == 1
    assert verify_key_statement(s, ca, NOT_AFTER - 1).serial == 1
    with pytest.raises(IdentityError, match="not yet valid"):
        verify_key_statement(s, ca, NOT_BEFORE - 1)
    with pytest.raises(IdentityError, match="expired"):
        verify_key_statement(s, ca, NOT_AFTER)


def test_wrong_agency_fails() -> None:
    with pytest.raises(IdentityError, match="not for the expected agency 'DE-BKA'"):
        verify_key_statement(signed(), CA_KEY.public_key(), NOW, expected_agency="DE-BKA")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"agency_id": ""}, "invalid agency"),
        ({"agency_id": "a b"}, "invalid agency"),
        ({"signing_key": bytes(31)}, "signing key must be 32 bytes"),
        ({"signing_key": bytes(33)}, "signing key must be 32 bytes"),
        ({"signing_key": b""}, "signing key must be 32 bytes"),
        ({"signing_key": b"\x01" + bytes(31)}, "not a usable Ed25519 key"),  # identity
        ({"signing_key": bytes(32)}, "not a usable Ed25519 key"),  # small order
        ({"encryption_key": bytes(31)}, "encryption key must be 32 bytes"),
        ({"encryption_key": b""}, "encryption key must be 32 bytes"),
        ({"serial": 0}, "serial must be at least 1"),
        ({"not_after_ms": NOT_BEFORE}, "empty validity window"),
    ],
)
def test_signed_but_invalid_content_fails(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        verify_key_statement(signed(**overrides), CA_KEY.public_key(), NOW)


def test_signed_garbage_is_parsed_only_after_verification() -> None:
    garbage = b"\xff\xff\xff"
    bad = notice_pb2.SignedKeyStatement(statement=garbage, signature=sign_bytes(garbage))
    with pytest.raises(IdentityError, match="not a KeyStatement"):
        verify_key_statement(bad, CA_KEY.public_key(), NOW)
    unsigned = notice_pb2.SignedKeyStatement(statement=garbage, signature=sign_bytes(b"x"))
    with pytest.raises(IdentityError, match="signature does not verify"):
        verify_key_statement(unsigned, CA_KEY.public_key(), NOW)


# --------------------------------------------------------------------------- newest statement


def test_newest_valid_statement_wins() -> None:
    ca = CA_KEY.public_key()
    s1 = signed(serial=1)
    rotated = es.ed25519_public_key(bytes(range(1, 33)))
    s2 = signed(serial=2, signing_key=rotated)
    s3_expired = signed(serial=3, not_after_ms=NOW)
    s4_forged = notice_pb2.SignedKeyStatement(
        statement=statement(serial=4).SerializeToString(),
        signature=sign_bytes(statement(serial=4).SerializeToString(), OTHER_CA_KEY),
    )
    other = signed(agency_id="DE-BKA", serial=7)
    got = newest_key_statements([s2, s1, s3_expired, s4_forged, other, s1], ca, NOW)
    assert sorted(got) == ["DE-BKA", "FR-NCB"]
    assert got["FR-NCB"].serial == 2
    assert got["FR-NCB"].signing_key == rotated
    assert got["DE-BKA"].serial == 7


def test_newest_skips_revoked_agencies() -> None:
    got = newest_key_statements(
        [signed(), signed(agency_id="DE-BKA")],
        CA_KEY.public_key(),
        NOW,
        revoked=["urn:broker:agency:FR-NCB"],
    )
    assert list(got) == ["DE-BKA"]


def test_conflicting_statements_with_same_serial_are_an_error() -> None:
    with pytest.raises(IdentityError, match="conflicting key statements"):
        newest_key_statements(
            [signed(serial=3), signed(serial=3, encryption_key=bytes(32))], CA_KEY.public_key(), NOW
        )
