"""Bounds on every input: one table-driven check that walks a protobuf message by its descriptor.

Everything a caller sends, and every signed message inside it, passes through
:func:`check` once it is parsed (``broker.server.wire.parse``,
``envelope_suite.parse_field``, the lifecycle, restriction, receipt and
activation parsers). The rules:

- integers: a uint64 or fixed64 never exceeds int64 (SQLite's integer, and every
  other store's), unless a field's rule is tighter; an enum holds a declared value;
- strings: at most ``DEFAULT_STRING_BYTES`` of UTF-8, no control characters
  (free-text fields may hold tab and newline), and canonical lower-case UUIDs
  where the field is a notice id or an action id;
- bytes: at most ``DEFAULT_BYTES``;
- repeated fields: at most ``DEFAULT_ITEMS`` items, and no duplicates where the
  field is a set (handling codes, section names, restriction lists, roles ...).

Defaults hold for every field; the exceptions are declared once, in ``FIELDS``,
keyed by the field's full name. Error messages quote at most a short prefix of
an offending value (:func:`quote`). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from broker.errors import InvalidArgument

INT64_MAX = (1 << 63) - 1
DEFAULT_STRING_BYTES = 256
DEFAULT_BYTES = 64 * 1024
DEFAULT_ITEMS = 1024
TEXT_BYTES = 1024  # free text: reasons, justifications
QUOTE_CHARS = 32  # how much of an offending value a message repeats

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A client's action id is a UUID; the broker's own (expiry, supersession) add "/v<n>/<kind>".
ACTION_ID = re.compile(UUID.pattern + r"(/v[0-9]{1,10}/[a-z_]{1,32})?")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FORMS = {"uuid": UUID, "action_id": ACTION_ID}
_FORM_HINT = {
    "uuid": "a lower-case UUID such as 123e4567-e89b-42d3-a456-426614174000",
    "action_id": "a lower-case UUID",
}


class BoundsError(InvalidArgument):
    """An input is out of range, too long, ill-formed or repeats itself; the message names
    the field."""


@dataclass(frozen=True)
class Bound:
    """What one field may hold, beyond the defaults.

    max_bytes: strings (UTF-8) and bytes; max_items: repeated fields; unique: a
    repeated field is a set (True for scalars, or the key field's name for
    messages); form: "uuid" or "action_id" (empty strings pass: whether a field is
    required is the handler's business); text: free text (tab, CR and LF allowed);
    max_value: integers.
    """

    max_bytes: int | None = None
    max_items: int | None = None
    unique: bool | str = False
    form: str = ""
    text: bool = False
    max_value: int | None = None


_SET = Bound(max_items=256, unique=True)
_NAMES = Bound(max_items=64, unique=True)
_UUID = Bound(form="uuid")
_ACTION = Bound(form="action_id")
_FREE = Bound(max_bytes=TEXT_BYTES, text=True)

# Every exception to the defaults, declared once. tests/core/test_bounds.py checks that
# each key names a real field and that the rule fits its type.
FIELDS: Mapping[str, Bound] = MappingProxyType(
    {
        # notices
        "broker.v1.NoticeHeader.notice_id": _UUID,
        "broker.v1.NoticeHeader.in_reply_to": _UUID,
        "broker.v1.NoticeHeader.handling_codes": Bound(max_items=8, unique=True),
        "broker.v1.SectionDescriptor.notice_id": _UUID,
        "broker.v1.WrapBody.notice_id": _UUID,
        "broker.v1.WrapBody.keys": Bound(max_items=64, unique="name"),
        "broker.v1.WrapLeaf.sections": _NAMES,
        "broker.v1.OriginatorRestrictions.allow_agencies": _SET,
        "broker.v1.OriginatorRestrictions.deny_agencies": _SET,
        "broker.v1.OriginatorRestrictions.allow_countries": _SET,
        "broker.v1.OriginatorRestrictions.deny_countries": _SET,
        "broker.v1.OriginatorRestrictions.allow_groups": _SET,
        "broker.v1.OriginatorRestrictions.deny_groups": _SET,
        "broker.v1.SealedSection.ciphertext": Bound(max_bytes=8 * 1024 * 1024),
        "broker.v1.SealedSection.proof": Bound(max_items=64),
        "broker.v1.KeyWrap.proof": Bound(max_items=64),
        "broker.v1.Envelope.restrictions": Bound(max_bytes=512 * 1024),
        "broker.v1.Envelope.wraps": Bound(max_items=4096),
        "broker.v1.Envelope.wrap_padding": Bound(max_items=4096),
        # receipts
        "broker.v1.Receipt.notice_id": _UUID,
        "broker.v1.Receipt.action_id": _ACTION,
        "broker.v1.Receipt.sections": _NAMES,
        "broker.v1.Receipt.obligations": Bound(unique=True),
        "broker.v1.SubmitReceiptsRequest.batches": Bound(max_items=16),
        # lifecycle and restrictions
        "broker.v1.LifecycleAction.action_id": _ACTION,
        "broker.v1.LifecycleAction.notice_id": _UUID,
        "broker.v1.LifecycleAction.reason": _FREE,
        "broker.v1.LifecycleAction.grounds": Bound(max_items=16, unique=True),  # + judicial
        "broker.v1.LifecycleAction.result_notice_id": _UUID,  # + judicial
        "broker.v1.RestrictionUpdate.notice_id": _UUID,
        "broker.v1.UpdateRestrictionsRequest.update": Bound(max_bytes=512 * 1024),
        "broker.v1.DeliveryStatusRequest.notice_id": _UUID,
        "broker.v1.ResolveAudienceRequest.sections": _NAMES,
        # administration
        "broker.v1.ExplainDecisionRequest.sections": _NAMES,
        "broker.v1.PolicyBundle.files": Bound(max_items=256, unique="path"),
        "broker.v1.BundleFile.content": Bound(max_bytes=1024 * 1024),
        "broker.v1.PolicyActivation.reason": _FREE,
        "broker.v1.SetAgencyStatusRequest.reason": _FREE,
        "broker.v1.AgencyEntry.roles": _NAMES,
        "broker.v1.AgencyEntry.groups": _NAMES,
        "broker.v1.AgencyEntry.purposes": _NAMES,
        # the transparency log: an index is below a size, and a size fits in int64
        "broker.v1.GetInclusionProofRequest.index": Bound(max_value=INT64_MAX - 1),
        "broker.v1.GetProofOfDeliveryRequest.notice_id": _UUID,
        "broker.v1.GetDecisionRecordsRequest.notices": Bound(max_items=256),
        "broker.v1.NoticeRef.notice_id": _UUID,
        "broker.v1.AddCosignatureRequest.signature_line": Bound(max_bytes=512, text=True),
        # + evidence: attachments and custody (evidence.proto); a chunk is at most 4 MiB
        # of plaintext plus secretstream's 17 bytes
        "broker.v1.NoticeHeader.attachments": Bound(max_items=8, unique="section"),
        "broker.v1.AttachmentRef.notice_id": _UUID,
        "broker.v1.UploadChunk.ciphertext": Bound(max_bytes=4 * 1024 * 1024 + 17),
        "broker.v1.DownloadChunk.ciphertext": Bound(max_bytes=4 * 1024 * 1024 + 17),
        "broker.v1.AttachmentKey.notice_id": _UUID,
        "broker.v1.CustodyRecord.notice_id": _UUID,
        "broker.v1.CustodyRecord.note": _FREE,
        "broker.v1.SignedCustody.record": Bound(max_bytes=4096),
    }
)

_UNSIGNED64 = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
_DEFAULT = Bound()


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """Return a short, printable rendering of `value` for an error message: its repr
    if short, else the repr of its first `limit` characters (hex for bytes) and its size."""
    if not isinstance(value, str | bytes):
        value = repr(value)
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, bytes):
        if len(value) <= limit // 2:
            return "0x" + value.hex()
        return f"0x{value[: limit // 2].hex()}… ({len(value)} bytes)"
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value.encode('utf-8', 'replace'))} bytes)"


def rule(full_name: str) -> Bound:
    """Return the declared rule of a field (the defaults if none is declared)."""
    return FIELDS.get(full_name, _DEFAULT)


def max_items(full_name: str) -> int:
    """The most items the repeated field `full_name` may hold."""
    return rule(full_name).max_items or DEFAULT_ITEMS


def check(msg: Message, path: str = "") -> None:
    """Check every field of `msg` (recursively) against its bounds.

    `path` names the message in errors ("header.header_bytes"); fields below it are
    named by dotted paths with [index] for repeated items.
    Raises BoundsError naming the first field out of bounds.
    """
    for field, value in msg.ListFields():
        plan = _plan(field)
        if field.is_repeated:
            if len(value) > plan.max_items or plan.bound.unique:
                _check_repeated(field, plan.bound, value, _where(path, field.name))
            if plan.kind != _SCALAR:
                for i, item in enumerate(value):
                    _check_item(plan, item, path, field.name, i)
        elif plan.kind != _SCALAR:
            _check_item(plan, value, path, field.name, -1)


_SCALAR, _MESSAGE, _STRING, _BYTES, _ENUM, _INTEGER = range(6)


@dataclass(frozen=True)
class _Plan:
    """How to check one field, worked out once per field descriptor."""

    field: FieldDescriptor
    bound: Bound
    kind: int
    max_items: int
    limit: int  # bytes for strings and bytes, the largest value for integers


_PLANS: dict[FieldDescriptor, _Plan] = {}


def _plan(field: FieldDescriptor) -> _Plan:
    got = _PLANS.get(field)
    if got is None:
        bound = FIELDS.get(field.full_name, _DEFAULT)
        t = field.type
        if t == FieldDescriptor.TYPE_MESSAGE:
            kind, limit = _MESSAGE, 0
        elif t == FieldDescriptor.TYPE_STRING:
            kind, limit = _STRING, bound.max_bytes or DEFAULT_STRING_BYTES
        elif t == FieldDescriptor.TYPE_BYTES:
            kind, limit = _BYTES, bound.max_bytes or DEFAULT_BYTES
        elif t == FieldDescriptor.TYPE_ENUM:
            kind, limit = _ENUM, 0
        elif t in _UNSIGNED64 or bound.max_value is not None:
            kind, limit = _INTEGER, INT64_MAX if bound.max_value is None else bound.max_value
        else:
            kind, limit = _SCALAR, 0
        got = _Plan(field, bound, kind, bound.max_items or DEFAULT_ITEMS, limit)
        _PLANS[field] = got
    return got


def _where(path: str, name: str, index: int = -1) -> str:
    where = f"{path}.{name}" if path else name
    return where if index < 0 else f"{where}[{index}]"


def _check_item(plan: _Plan, value: Any, path: str, name: str, index: int) -> None:
    kind = plan.kind
    if kind == _MESSAGE:
        check(value, _where(path, name, index))
    elif kind == _STRING:
        # At most 4 UTF-8 bytes a character: short strings need no encoding to measure.
        if len(value) * 4 > plan.limit or _has_control(plan.bound, value) or plan.bound.form:
            _check_string(plan.bound, value, _where(path, name, index))
    elif kind == _BYTES:
        if len(value) > plan.limit:
            where = _where(path, name, index)
            raise BoundsError(f"{where} is {len(value)} bytes; at most {plan.limit} are allowed")
    elif kind == _ENUM:
        enum = plan.field.enum_type
        assert enum is not None  # an enum field has its type
        if value not in enum.values_by_number:
            names = ", ".join(v.name for v in enum.values if v.number)
            where = _where(path, name, index)
            raise BoundsError(f"{where} is {value}, not a {enum.name} (use one of {names})")
    elif kind == _INTEGER and value > plan.limit:
        where = _where(path, name, index)
        raise BoundsError(f"{where} is {value}; the largest value allowed is {plan.limit}")


def _has_control(bound: Bound, value: str) -> bool:
    return (_TEXT_CONTROL if bound.text else CONTROL_CHARS).search(value) is not None


def _check_repeated(field: FieldDescriptor, bound: Bound, items: Any, where: str) -> None:
    limit = bound.max_items or DEFAULT_ITEMS
    if len(items) > limit:
        raise BoundsError(f"{where} holds {len(items)} items; at most {limit} are allowed")
    if not bound.unique:
        return
    seen: set[Any] = set()
    for item in items:
        key = getattr(item, bound.unique) if isinstance(bound.unique, str) else item
        if key in seen:
            raise BoundsError(f"{where} lists {_render(key)} twice; list each once")
        seen.add(key)


def _render(value: Any) -> str:
    return quote(value) if isinstance(value, str | bytes) else str(value)


def _check_string(bound: Bound, value: str, where: str) -> None:
    limit = bound.max_bytes or DEFAULT_STRING_BYTES
    size = len(value.encode("utf-8"))
    if size > limit:
        raise BoundsError(f"{where} is {size} bytes ({quote(value)}); at most {limit} are allowed")
    control = (_TEXT_CONTROL if bound.text else CONTROL_CHARS).search(value)
    if control is not None:
        raise BoundsError(
            f"{where} holds the control character {control.group()!r} ({quote(value)}); remove it"
        )
    if bound.form and value and not _FORMS[bound.form].fullmatch(value):
        raise BoundsError(f"{where} {quote(value)} is not {_FORM_HINT[bound.form]}")


def fields_of(descriptor: Descriptor) -> Iterable[FieldDescriptor]:
    """Every field reachable from `descriptor` (each message type once): what the tests
    and the documentation walk."""
    seen: set[str] = set()
    todo = [descriptor]
    while todo:
        d = todo.pop()
        if d.full_name in seen:
            continue
        seen.add(d.full_name)
        for f in d.fields:
            yield f
            if f.message_type is not None:
                todo.append(f.message_type)
