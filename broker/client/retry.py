"""The broker's retry delay: google.rpc.RetryInfo in a refusal's rich status details.

The broker answers an agency over its rate limit or quota RESOURCE_EXHAUSTED with a
google.rpc.Status in the `grpc-status-details-bin` trailer carrying a RetryInfo
(broker/server/status.py). The SDK waits that long and retries, a bounded number of
times (NodeConfig.quota_retries, each wait at most quota_wait_max_s), then raises
RateLimited saying what the broker asked.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from broker.errors import RateLimited

DETAILS_KEY = "grpc-status-details-bin"


def retry_delay_ms(exc: grpc.aio.AioRpcError) -> int | None:
    """The delay (ms) the broker asked for in `exc`'s RetryInfo, or None without one."""
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    for key, value in exc.trailing_metadata() or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                delay: int = info.retry_delay.ToMilliseconds()
                return max(0, delay)
    return None


def rate_limited(exc: grpc.aio.AioRpcError, retries: int, delay_ms: int | None) -> RateLimited:
    """The SDK's error once it stopped retrying a refusal over quota."""
    asked = f"; the broker asks to wait {delay_ms} ms" if delay_ms is not None else ""
    tried = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    error = RateLimited(
        f"the broker refused over quota{tried}: {exc.details() or ''}{asked}; "
        "publish more slowly or ask the operator for a larger [quotas] entry",
        delay_ms or 0,
    )
    return error
