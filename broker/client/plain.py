"""Plain values for the SDK: enums as strings ("suspect", "withdraw") and sections as str
or bytes, checked before anything is sealed or sent.

Each function takes what an application naturally has and returns what the wire needs,
or raises: TypeError for a value of the wrong type, InvalidArgument for an unknown name
(the message lists the names there are). Protobuf enum numbers are still accepted, so
existing callers keep working.
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.core.bounds import quote
from broker.errors import InvalidArgument
from broker.v1 import notice_pb2


def _names(enum: object, prefix: str) -> dict[str, int]:
    values: dict[str, int] = {
        name.removeprefix(prefix).lower(): int(number)
        for name, number in enum.items()  # type: ignore[attr-defined]
        if not name.endswith("_UNSPECIFIED")
    }
    return values


DATA_SUBJECTS = _names(notice_pb2.DataSubjectCategory, "DATA_SUBJECT_")
LIFECYCLE_KINDS = _names(notice_pb2.LifecycleKind, "LIFECYCLE_")


def _enum(value: object, names: dict[str, int], what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(
            f"{what} must be a string such as {next(iter(names))!r}, not {type(value).__name__}"
        )
    if isinstance(value, int):
        if value not in names.values():
            raise InvalidArgument(f"{what} {value} is not one of {', '.join(names)}")
        return value
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    for prefix in ("data_subject_", "lifecycle_"):
        key = key.removeprefix(prefix)
    if key not in names:
        raise InvalidArgument(f"{what} {quote(value)} is not one of {', '.join(names)}")
    return names[key]


def data_subject(value: str | int) -> notice_pb2.DataSubjectCategory.ValueType:
    """The data-subject category for "suspect", "convicted", "victim", "witness",
    "other", "none" (or its protobuf number)."""
    return notice_pb2.DataSubjectCategory.ValueType(_enum(value, DATA_SUBJECTS, "data subject"))


def data_subject_name(number: int) -> str:
    """ "suspect" for DATA_SUBJECT_SUSPECT ...; "unspecified" for 0 or an unknown number."""
    return next((k for k, v in DATA_SUBJECTS.items() if v == number), "unspecified")


def lifecycle_kind(value: str | int) -> notice_pb2.LifecycleKind.ValueType:
    """The lifecycle action kind for "suspend", "withdraw", "request_flag_lift" ... (or
    its protobuf number)."""
    return notice_pb2.LifecycleKind.ValueType(_enum(value, LIFECYCLE_KINDS, "lifecycle kind"))


def section_bytes(name: object, value: object) -> bytes:
    """A section's content as sealed: bytes as they are, str as UTF-8. Raises TypeError
    for a name that is not a str or content that is neither str nor bytes."""
    if not isinstance(name, str):
        raise TypeError(f"section names are strings, not {type(name).__name__} ({name!r})")
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(
        f"section {name!r} must be str (sent as UTF-8) or bytes, not {type(value).__name__}"
    )


def sections_bytes(sections: Mapping[str, bytes | str]) -> dict[str, bytes]:
    """Every section as bytes (section_bytes); raises TypeError for anything else."""
    if not isinstance(sections, Mapping):
        raise TypeError(
            f"sections must be a mapping of name to str or bytes, not {type(sections).__name__}"
        )
    return {name: section_bytes(name, value) for name, value in sections.items()}
