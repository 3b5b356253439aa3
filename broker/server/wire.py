"""Small helpers every service handler uses: the clock, and parsing request bytes."""

from __future__ import annotations

import time
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from broker.errors import InvalidArgument

M = TypeVar("M", bound=Message)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse(cls: type[M], data: bytes) -> M:
    """Parse request bytes; raise InvalidArgument naming the expected message."""
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"request is not a valid {cls.DESCRIPTOR.full_name}") from exc
    return msg
