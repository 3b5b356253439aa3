"""Hypothesis strategies built from the protobuf descriptors: any message of the wire contract.

`messages(descriptor)` draws a message field by field, leaning on the values that
break things: integers at and beyond the int64 edge, unknown enum numbers,
strings with control characters or past their bound, ids that are not UUIDs,
lists at and past their bound, duplicates in sets. Every RPC's request type
and every signed inner message is covered (REQUEST_TYPES, SIGNED_TYPES).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from broker.core import bounds
from broker.v1 import admin_pb2, agency_pb2, audit_pb2, evidence_pb2, notice_pb2

SERVICES = (
    agency_pb2.DESCRIPTOR.services_by_name["AgencyService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    evidence_pb2.DESCRIPTOR.services_by_name["EvidenceService"],  # + evidence
)
# Every RPC's request type, from the service descriptors (a new RPC is covered at once).
REQUEST_TYPES: tuple[type[Message], ...] = tuple(
    GetMessageClass(d)
    for d in sorted(
        {m.input_type.full_name: m.input_type for s in SERVICES for m in s.methods}.values(),
        key=lambda d: d.full_name,
    )
)
# Messages that travel as signed bytes inside a request, parsed after their signature.
SIGNED_TYPES: tuple[type[Message], ...] = (
    notice_pb2.NoticeHeader,
    notice_pb2.SectionDescriptor,
    notice_pb2.WrapLeaf,
    notice_pb2.OriginatorRestrictions,
    notice_pb2.Receipt,
    notice_pb2.LifecycleAction,
    notice_pb2.KeyStatement,
    agency_pb2.RestrictionUpdate,
    admin_pb2.PolicyActivation,
    admin_pb2.AgencyEntry,
    evidence_pb2.CustodyRecord,  # + evidence
    evidence_pb2.AttachmentKey,
)

UUID = "123e4567-e89b-42d3-a456-426614174000"
INT64_MAX = bounds.INT64_MAX
_INTS = {
    FieldDescriptor.TYPE_UINT64: (0, (1 << 64) - 1, [0, 1, INT64_MAX - 1, INT64_MAX, 1 << 63]),
    FieldDescriptor.TYPE_FIXED64: (0, (1 << 64) - 1, [0, INT64_MAX, 1 << 63, (1 << 64) - 1]),
    FieldDescriptor.TYPE_INT64: (-(1 << 63), INT64_MAX, [-(1 << 63), -1, 0, 1, INT64_MAX]),
    FieldDescriptor.TYPE_SFIXED64: (-(1 << 63), INT64_MAX, [-(1 << 63), 0, INT64_MAX]),
    FieldDescriptor.TYPE_SINT64: (-(1 << 63), INT64_MAX, [-(1 << 63), 0, INT64_MAX]),
    FieldDescriptor.TYPE_UINT32: (0, (1 << 32) - 1, [0, 1, (1 << 32) - 1]),
    FieldDescriptor.TYPE_FIXED32: (0, (1 << 32) - 1, [0, (1 << 32) - 1]),
    FieldDescriptor.TYPE_INT32: (-(1 << 31), (1 << 31) - 1, [-(1 << 31), -1, 0, (1 << 31) - 1]),
    FieldDescriptor.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1, [-(1 << 31), 0]),
    FieldDescriptor.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1, [-(1 << 31), 0]),
}
_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
        st.sampled_from("\x00\n\t\x7fAZaz09-_.:/é"),
    ),
    max_size=40,
)
_SPECIAL_STRINGS = st.sampled_from(
    [
        "",
        UUID,
        UUID.upper(),
        UUID + "/v2/superseded",
        "../../etc/passwd",
        "FR-NCB",
        "DE-BKA",
        "interpol.red",
        "locate_arrest",
        "identity",
        "H0",
        "H3:",
        "\x00",
        "x" * 257,
        "é" * 129,
        "r" * 1025,
    ]
)


def _string(field: FieldDescriptor) -> st.SearchStrategy[str]:
    limit = bounds.rule(field.full_name).max_bytes or bounds.DEFAULT_STRING_BYTES
    edge = st.sampled_from(["a" * limit, "a" * (limit + 1)])
    return st.one_of(_SPECIAL_STRINGS, _TEXT, edge)


def _bytes(field: FieldDescriptor) -> st.SearchStrategy[bytes]:
    limit = bounds.rule(field.full_name).max_bytes or bounds.DEFAULT_BYTES
    sizes = [32, 64] + ([limit, limit + 1] if limit <= 64 * 1024 else [])  # no 8 MiB draws
    edge = st.sampled_from([bytes(n) for n in sizes])
    return st.one_of(st.binary(max_size=64), edge)


def _scalar(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        return messages(field.message_type, depth + 1)
    if kind == FieldDescriptor.TYPE_STRING:
        return _string(field)
    if kind == FieldDescriptor.TYPE_BYTES:
        return _bytes(field)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = sorted(field.enum_type.values_by_number)
        return st.sampled_from([*known, 99, -1])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=False, width=32)
    low, high, edges = _INTS[kind]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _repeated(field: FieldDescriptor, depth: int) -> st.SearchStrategy[list[Any]]:
    item = _scalar(field, depth)
    small = st.lists(item, max_size=3 if depth < 2 else 1)
    limit = bounds.max_items(field.full_name)
    if field.type == FieldDescriptor.TYPE_MESSAGE or limit > 64:
        return small
    # At and past the bound, and a duplicate: one value repeated.
    at_edge = st.builds(lambda v, n: [v] * n, item, st.sampled_from([2, limit, limit + 1]))
    return st.one_of(small, at_edge)


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int) -> Message:
    msg = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if depth > 3 and field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        if not draw(st.booleans()):
            continue
        if field.is_repeated:
            values = draw(_repeated(field, depth))
            target = getattr(msg, field.name)
            for v in values:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    target.add().CopyFrom(v)
                else:
                    target.append(v)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(msg, field.name).CopyFrom(draw(_scalar(field, depth)))
        else:
            setattr(msg, field.name, draw(_scalar(field, depth)))
    return msg


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of type `descriptor`, leaning on the edges of its bounds."""
    return _message(descriptor, depth)


def request_bytes(cls: type[Message]) -> st.SearchStrategy[bytes]:
    """Bytes a client might send for `cls`: a drawn message, or arbitrary bytes."""
    return st.one_of(
        messages(cls.DESCRIPTOR).map(lambda m: m.SerializeToString()),
        st.binary(max_size=128),
    )
