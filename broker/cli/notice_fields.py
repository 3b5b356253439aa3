"""The header fields `broker node publish` takes as text: data subject, evaluation,
times. Parsers for argparse (they raise ArgumentTypeError with what to write) and
the kind-aware default of the data subject."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from broker.core.policy import Bundle
from broker.errors import InvalidArgument
from broker.v1 import notice_pb2

# LED (EU) 2016/680 Art. 6 categories, as the catalogue names them.
DATA_SUBJECTS = ("suspect", "convicted", "victim", "witness", "other", "none")
SOURCES = "ABCX"
INFORMATION = "1234"
DAY_MS = 86_400_000


def data_subject_value(name: str) -> int:
    """The wire value of a category name, e.g. "victim" -> DATA_SUBJECT_VICTIM."""
    return int(notice_pb2.DataSubjectCategory.Value(f"DATA_SUBJECT_{name.upper()}"))


def data_subject_name(value: int) -> str:
    """The catalogue's name of a wire value ("" for unspecified or unknown)."""
    try:
        name: str = notice_pb2.DataSubjectCategory.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return ""
    return "" if value == 0 else name.removeprefix("DATA_SUBJECT_").lower()


def evaluation(text: str) -> tuple[str, str]:
    """'B2' (or 'B/2', 'b2') -> ('B', '2'): Europol 4x4, source A/B/C/X, information 1-4."""
    code = text.replace("/", "").replace(" ", "").upper()
    if len(code) != 2 or code[0] not in SOURCES or code[1] not in INFORMATION:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an evaluation: write the source (A, B, C or X) and the "
            "information (1 to 4), e.g. B2 (there is no D)"
        )
    return code[0], code[1]


def iso_time(text: str) -> int:
    """An ISO-8601 date or time (UTC unless it says otherwise) -> unix milliseconds."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 date or time: write e.g. 2027-06-30 or "
            "2027-06-30T12:00:00Z"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def expiry(expires_at_ms: int | None, expires_in_days: int, now_ms: int) -> int:
    """How long from now the notice lives, in milliseconds; an expiry in the past is refused."""
    if expires_at_ms is None:
        return expires_in_days * DAY_MS
    if expires_at_ms <= now_ms:
        raise InvalidArgument("--expires-at is in the past: give a later date or time")
    return expires_at_ms - now_ms


def data_subject(policy: Bundle, kind: str, given: str | None) -> int:
    """The data subject to seal: the one given, or the kind's default under the signed
    policy: its only category, else `suspect` where the kind allows it. Raises
    InvalidArgument naming --data-subject and the kind's categories otherwise (an
    unknown kind is left to the policy's own message)."""
    if given is not None:
        return data_subject_value(given)
    spec = policy.kinds.get(kind)
    if spec is None:
        return data_subject_value("suspect")
    if len(spec.data_subjects) == 1:
        return data_subject_value(spec.data_subjects[0])
    if "suspect" in spec.data_subjects:
        return data_subject_value("suspect")
    raise InvalidArgument(f"{kind} needs --data-subject: one of {', '.join(spec.data_subjects)}")


# What the catalogue's refusals ask for, and the `node publish` flag that gives it.
FLAG_HINTS = (
    ("needs a data subject", "--data-subject"),
    ("data subject ", "--data-subject"),
    ("needs an evaluation", "--evaluation, e.g. B2"),
    ("evaluation ", "--evaluation, e.g. B2"),
    ("handling code", "--handling"),
    ("requires section", "--section NAME=TEXT or --field SECTION.FIELD=VALUE"),
    ("content: section", "--field SECTION.FIELD=VALUE"),
    ("embargo", "--embargo-hours"),
)


def with_flag(message: str) -> str:
    """A policy refusal with the flag that fixes it, e.g. "... needs an evaluation (source
    A/B/C/X, info 1-4) [--evaluation, e.g. B2]"; other messages unchanged."""
    for needle, flag in FLAG_HINTS:
        if needle in message:
            return f"{message} [{flag}]"
    return message
