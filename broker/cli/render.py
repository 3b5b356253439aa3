"""How the CLI prints broker answers: one JSON schema, readable tables.

JSON (`--json`): every field of the message, under its proto name; numbers as
JSON numbers (64-bit ones too, which protobuf's own JSON writes as strings);
booleans as booleans; bytes as lower-case hex; enums by name; nested messages
as objects and repeated fields as arrays. Times stay unix milliseconds in
fields ending `_ms`, each beside an ISO-8601 copy under the name without `_ms`
plus `_at` (`at_ms` -> `at`, `issued_at_ms` -> `issued_at`), so a script
needs no conversion and a person can read either.

Text: a message's scalar fields as `name: value` lines, and each repeated field
of messages as a table, one row per item, with times in ISO 8601 (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

# Long values are cut in tables (the whole value is in --json).
CELL_MAX = 64


def iso_ms(ms: int) -> str:
    """Unix milliseconds as ISO 8601 in UTC, e.g. 2026-12-02T03:04:05Z; "" for 0."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_name(field: str) -> str:
    """The ISO copy's name of a `_ms` field: at_ms -> at, respond_by_ms -> respond_by."""
    return field.removesuffix("_ms")


def _scalar(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes(value).hex()
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type.values_by_number.get(value)
        return enum.name if enum is not None else value
    return value


def to_data(message: Message) -> dict[str, Any]:
    """Every field of `message` as plain JSON values (see the module docstring)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {
                str(k): (to_data(v) if value_field.message_type else _scalar(value_field, v))
                for k, v in value.items()
            }
        elif field.is_repeated:
            if field.message_type is not None:
                out[field.name] = [to_data(v) for v in value]
            else:
                out[field.name] = [_scalar(field, v) for v in value]
        elif field.message_type is not None:
            out[field.name] = to_data(value) if message.HasField(field.name) else None
        else:
            out[field.name] = _scalar(field, value)
            if field.name.endswith("_ms") and isinstance(value, int):
                out[time_name(field.name)] = iso_ms(value) or None
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        text = ", ".join(_cell(v) for v in value) or "-"
    elif isinstance(value, dict):
        text = "; ".join(f"{k}={_cell(v)}" for k, v in value.items() if v not in ("", None, [], 0))
    else:
        text = str(value)
    if text == "":
        return "-"
    return text if len(text) <= CELL_MAX else text[: CELL_MAX - 1] + "…"


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns worth showing: fields set in some row; a `_ms` field by its ISO copy."""
    names: list[str] = []
    for row in rows:
        for k in row:
            if k not in names:
                names.append(k)
    shown = []
    for k in names:
        if k.endswith("_ms") and time_name(k) in names:
            continue  # the ISO copy stands for it
        if any(row.get(k) not in (None, "", [], {}, 0, False) for row in rows):
            shown.append(k)
    return shown


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as an aligned text table with a header line."""
    if not rows:
        return "(none)"
    cols = list(columns) if columns is not None else _columns(rows)
    if not cols:
        return f"({len(rows)} empty row(s))"
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def text(data: Mapping[str, Any]) -> str:
    """A message's data as text: scalars as `name: value`, lists of objects as tables."""
    lines: list[str] = []
    tables: list[str] = []
    for k, v in data.items():
        if k.endswith("_ms") and time_name(k) in data:
            continue
        if isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
            tables.append(f"{k}:\n{table(v)}")
        elif isinstance(v, dict):
            inner = text(v)
            if inner:
                lines.append(f"{k}:")
                lines.extend("  " + line for line in inner.splitlines())
        elif v not in (None, "", [], {}):
            lines.append(f"{k}: {_cell(v) if not isinstance(v, str) else v}")
    return "\n".join([*lines, *tables])
