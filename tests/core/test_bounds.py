"""broker.core.bounds: the table is sound, and every rule refuses what it should and only that."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import given, settings

from broker.core import bounds
from broker.core.bounds import INT64_MAX, BoundsError
from broker.v1 import admin_pb2, agency_pb2, audit_pb2, evidence_pb2, notice_pb2

from ..fuzz.strategies import REQUEST_TYPES, SIGNED_TYPES, messages

FILES = (notice_pb2, agency_pb2, admin_pb2, audit_pb2, evidence_pb2)  # + evidence
UUID = "123e4567-e89b-42d3-a456-426614174000"


def all_fields() -> Iterator[FieldDescriptor]:
    for module in FILES:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            yield from bounds.fields_of(message)


FIELD_BY_NAME = {f.full_name: f for f in all_fields()}


def test_every_rule_names_a_real_field_and_fits_its_type() -> None:
    for name, rule in bounds.FIELDS.items():
        field = FIELD_BY_NAME.get(name)
        assert field is not None, f"{name} is not a broker.v1 field"
        kind = field.type
        if rule.max_bytes is not None or rule.text:
            assert kind in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES), name
        if rule.form:
            assert rule.form in ("uuid", "action_id") and kind == FieldDescriptor.TYPE_STRING
        if rule.max_items is not None or rule.unique:
            assert field.is_repeated, name
        if isinstance(rule.unique, str):
            assert field.message_type is not None
            assert rule.unique in field.message_type.fields_by_name, name
        if rule.max_value is not None:
            assert kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT64), name


def _set_path(msg: Message, field: FieldDescriptor, value: object) -> None:
    if field.is_repeated:
        getattr(msg, field.name).append(value)
    else:
        setattr(msg, field.name, value)


def _message_of(field: FieldDescriptor) -> Message:
    return GetMessageClass(field.containing_type)()


UNSIGNED = [
    f
    for f in FIELD_BY_NAME.values()
    if f.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
]


@pytest.mark.parametrize("field", UNSIGNED, ids=lambda f: f.full_name)
def test_every_uint64_beyond_int64_is_refused(field: FieldDescriptor) -> None:
    limit = bounds.rule(field.full_name).max_value or INT64_MAX
    ok = _message_of(field)
    _set_path(ok, field, limit)
    bounds.check(ok)
    bad = _message_of(field)
    _set_path(bad, field, limit + 1)
    with pytest.raises(BoundsError, match=rf"{field.name}(\[0\])? is {limit + 1}; the largest"):
        bounds.check(bad)


def test_the_issue_s_integers_are_refused_before_any_store_sees_them() -> None:
    cases = [
        audit_pb2.GetCheckpointRequest(size=1 << 63),
        audit_pb2.GetInclusionProofRequest(index=1 << 63),
        audit_pb2.GetInclusionProofRequest(index=INT64_MAX),  # index + 1 must still fit
        audit_pb2.AddCosignatureRequest(size=(1 << 64) - 1),
        agency_pb2.RestrictionUpdate(notice_id=UUID, sequence=1 << 63),
        agency_pb2.SubscribeRequest(ack_events=agency_pb2.AckEvents(up_to_sequence=1 << 63)),
    ]
    for msg in cases:
        with pytest.raises(BoundsError, match="the largest value allowed"):
            bounds.check(msg)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (UUID, True),
        ("", True),  # whether a notice id is required is the handler's business
        (UUID.upper(), False),
        ("{" + UUID + "}", False),
        (UUID.replace("-", ""), False),
        ("../../etc/passwd", False),
        (UUID + "\x00", False),
        ("x" * 60_000, False),
    ],
)
def test_notice_ids_are_canonical_lower_case_uuids(value: str, ok: bool) -> None:
    msg = agency_pb2.DeliveryStatusRequest(notice_id=value)
    if ok:
        bounds.check(msg)
    else:
        with pytest.raises(BoundsError, match="notice_id"):
            bounds.check(msg)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(UUID, True), (UUID + "/v2/superseded", True), (UUID + "/x", False), ("a1", False)],
)
def test_action_ids_are_uuids_or_the_broker_s_own(value: str, ok: bool) -> None:
    msg = notice_pb2.Receipt(action_id=value)
    if ok:
        bounds.check(msg)
    else:
        with pytest.raises(BoundsError, match=r"action_id .* is not a lower-case UUID"):
            bounds.check(msg)


def test_strings_are_bounded_and_quoted_short() -> None:
    kind = "k" * (1024 * 1024)
    with pytest.raises(BoundsError) as info:
        bounds.check(agency_pb2.ResolveAudienceRequest(draft=notice_pb2.NoticeHeader(kind=kind)))
    message = str(info.value)
    assert message.startswith("draft.kind is 1048576 bytes (")
    assert "at most 256 are allowed" in message
    assert len(message) < 200  # a 1 MB kind is never repeated back
    bounds.check(notice_pb2.NoticeHeader(kind="k" * bounds.DEFAULT_STRING_BYTES))
    # UTF-8 bytes, not characters, are counted
    with pytest.raises(BoundsError, match="is 258 bytes"):
        bounds.check(notice_pb2.NoticeHeader(kind="é" * 129))


def test_control_characters_are_refused_except_in_free_text() -> None:
    with pytest.raises(BoundsError, match=r"control character '\\x00'"):
        bounds.check(notice_pb2.NoticeHeader(kind="interpol.red\x00"))
    with pytest.raises(BoundsError, match="control character"):
        bounds.check(notice_pb2.NoticeHeader(originator="FR\nNCB"))
    bounds.check(notice_pb2.LifecycleAction(reason="line one\nline two\ttabbed"))
    with pytest.raises(BoundsError, match="control character"):
        bounds.check(notice_pb2.LifecycleAction(reason="bell \x07"))
    free = "r" * bounds.TEXT_BYTES
    bounds.check(notice_pb2.LifecycleAction(reason=free))
    with pytest.raises(BoundsError, match="reason is 1025 bytes"):
        bounds.check(notice_pb2.LifecycleAction(reason=free + "r"))


def test_bytes_are_bounded() -> None:
    bounds.check(notice_pb2.SignedHeader(header_bytes=bytes(bounds.DEFAULT_BYTES)))
    with pytest.raises(BoundsError, match="header_bytes is 65537 bytes"):
        bounds.check(notice_pb2.SignedHeader(header_bytes=bytes(bounds.DEFAULT_BYTES + 1)))
    big = notice_pb2.SealedSection(ciphertext=bytes(bounds.DEFAULT_BYTES * 4))
    bounds.check(big)  # section ciphertext has its own, larger bound


def test_repeated_fields_are_bounded_and_sets_have_no_duplicates() -> None:
    with pytest.raises(BoundsError, match="handling_codes holds 9 items; at most 8"):
        bounds.check(notice_pb2.NoticeHeader(handling_codes=["H0"] * 9))
    with pytest.raises(BoundsError, match="handling_codes lists 'H0' twice"):
        bounds.check(notice_pb2.NoticeHeader(handling_codes=["H0", "H1", "H0"]))
    with pytest.raises(BoundsError, match="handling_codes holds 100000 items"):
        bounds.check(notice_pb2.NoticeHeader(handling_codes=["H0"] * 100_000))
    with pytest.raises(BoundsError, match=r"restrictions.deny_countries lists 'FR' twice"):
        bounds.check(
            agency_pb2.ResolveAudienceRequest(
                restrictions=notice_pb2.OriginatorRestrictions(deny_countries=["FR", "FR"])
            )
        )
    files = [admin_pb2.BundleFile(path="catalogue.toml", content=b"a")] * 2
    with pytest.raises(BoundsError, match=r"files lists .catalogue\.toml. twice"):
        bounds.check(admin_pb2.ValidatePolicyRequest(bundle=admin_pb2.PolicyBundle(files=files)))
    with pytest.raises(BoundsError, match=r"notices holds 257 items; at most 256"):
        bounds.check(audit_pb2.GetDecisionRecordsRequest(notices=[audit_pb2.NoticeRef()] * 257))
    # a list that is not a set may repeat itself
    bounds.check(notice_pb2.SealedSection(proof=[b"a", b"a"]))


def test_unknown_enum_values_are_refused() -> None:
    with pytest.raises(BoundsError, match=r"tlp is 99, not a Tlp \(use one of TLP_CLEAR"):
        bounds.check(notice_pb2.NoticeHeader(tlp=99))  # type: ignore[arg-type]
    with pytest.raises(BoundsError, match="kind is 42, not a LifecycleKind"):
        bounds.check(notice_pb2.LifecycleAction(kind=42))  # type: ignore[arg-type]


def test_paths_name_nested_and_repeated_fields() -> None:
    req = agency_pb2.PublishRequest()
    req.envelopes.add().sections.add(ciphertext=b"x", proof=[b"p"] * 65)
    with pytest.raises(BoundsError, match=r"^envelopes\[0\]\.sections\[0\]\.proof holds 65"):
        bounds.check(req)
    with pytest.raises(BoundsError, match=r"^header\.header_bytes\.kind is"):
        bounds.check(notice_pb2.NoticeHeader(kind="k" * 300), "header.header_bytes")


def test_quote_keeps_a_short_prefix() -> None:
    assert bounds.quote("short") == "'short'"
    long = "x" * 10_000
    assert bounds.quote(long) == f"{'x' * 32!r}… (10000 bytes)"
    assert bounds.quote(b"\x01\x02") == "0x0102"
    assert bounds.quote(bytes(100)).endswith("… (100 bytes)")


def _oracle(msg: Message) -> bool:
    """An independent statement of the rules: True iff `msg` is within bounds."""
    for field, value in msg.ListFields():
        rule = bounds.rule(field.full_name)
        items = list(value) if field.is_repeated else [value]
        if field.is_repeated:
            if len(items) > (rule.max_items or bounds.DEFAULT_ITEMS):
                return False
            if rule.unique:
                keys = [
                    getattr(v, rule.unique) if isinstance(rule.unique, str) else v for v in items
                ]
                if len(set(keys)) != len(keys):
                    return False
        for v in items:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if not _oracle(v):
                    return False
            elif field.type == FieldDescriptor.TYPE_STRING:
                allowed_controls = "\t\n\r" if rule.text else ""
                if len(v.encode()) > (rule.max_bytes or bounds.DEFAULT_STRING_BYTES):
                    return False
                if any((ord(c) < 32 or ord(c) == 127) and c not in allowed_controls for c in v):
                    return False
                pattern = bounds.UUID if rule.form == "uuid" else bounds.ACTION_ID
                if rule.form and v and not pattern.fullmatch(v):
                    return False
            elif field.type == FieldDescriptor.TYPE_BYTES:
                if len(v) > (rule.max_bytes or bounds.DEFAULT_BYTES):
                    return False
            elif field.type == FieldDescriptor.TYPE_ENUM:
                if v not in field.enum_type.values_by_number:  # type: ignore[union-attr]
                    return False
            elif v > (rule.max_value or (INT64_MAX if field.type in _U64 else 1 << 64)):
                return False
    return True


_U64 = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)


def _descriptor(cls: type[Message]) -> Descriptor:
    return cls.DESCRIPTOR


@pytest.mark.parametrize("cls", REQUEST_TYPES + SIGNED_TYPES, ids=lambda c: c.DESCRIPTOR.full_name)
def test_check_agrees_with_an_independent_statement_of_the_rules(cls: type[Message]) -> None:
    @settings(max_examples=10)
    @given(messages(_descriptor(cls)))
    def agree(msg: Message) -> None:
        try:
            bounds.check(msg)
        except BoundsError:
            assert not _oracle(msg)
        else:
            assert _oracle(msg)

    agree()


def _describe(rule: bounds.Bound) -> str:
    parts = []
    if rule.form:
        parts.append("lower-case UUID" if rule.form == "uuid" else "UUID (or the broker's own id)")
    if rule.max_bytes is not None:
        parts.append(f"at most {rule.max_bytes} bytes")
    if rule.text:
        parts.append("free text (tab, CR, LF allowed)")
    if rule.max_items is not None:
        parts.append(f"at most {rule.max_items} items")
    if rule.unique:
        parts.append("a set" if rule.unique is True else f"a set by {rule.unique}")
    if rule.max_value is not None:
        parts.append(f"at most {rule.max_value}")
    return ", ".join(parts)


def test_bounds_table_in_docs() -> None:
    from .. import matrices

    defaults = (
        f"Defaults for every field: uint64 and fixed64 at most {INT64_MAX} (int64); enums a "
        f"declared value; strings at most {bounds.DEFAULT_STRING_BYTES} bytes of UTF-8 "
        f"without control characters; bytes at most {bounds.DEFAULT_BYTES}; repeated fields "
        f"at most {bounds.DEFAULT_ITEMS} items. The exceptions (`broker/core/bounds.py` FIELDS):"
    )
    rows = [
        [matrices.code(name.removeprefix("broker.v1.")), matrices.cell(_describe(rule))]
        for name, rule in sorted(bounds.FIELDS.items())
    ]
    matrices.sync("bounds", defaults + "\n\n" + matrices.table(["field", "bound"], rows))
