"""Small helpers every service handler uses: the clock, and parsing request bytes.

`parse` is the one place requests are parsed: every field of every request is
checked against its bounds there (broker/core/bounds.py), so no handler sees an
integer beyond int64, an unbounded string or list, or a notice id that is not a
UUID.
"""

from __future__ import annotations

import time
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from broker.core import bounds
from broker.errors import InvalidArgument

M = TypeVar("M", bound=Message)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse(cls: type[M], data: bytes) -> M:
    """Parse request bytes and check their bounds; raise InvalidArgument naming the expected
    message, or the field out of bounds."""
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"request is not a valid {cls.DESCRIPTOR.full_name}") from exc
    bounds.check(msg)
    return msg
