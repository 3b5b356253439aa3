"""The one table from BrokerError to gRPC status, and the boundary that applies it.

Expected errors carry a message safe to show the caller. Anything else is
logged with its traceback and answered INTERNAL with fixed text: internals
never leak.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from broker import errors

log = logging.getLogger("broker.server")

STATUS: dict[type[errors.BrokerError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}
INTERNAL_TEXT = errors.INTERNAL_TEXT


def status_of(exc: errors.BrokerError) -> grpc.StatusCode:
    """Return the gRPC status for an expected error (most specific class wins)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.UNKNOWN


# A status message travels in HTTP/2 trailers; clients refuse metadata beyond 8 KiB by
# default, so an over-long message would turn the real status into a transport error.
MAX_MESSAGE_BYTES = 1024


def status_message(exc: errors.BrokerError) -> str:
    """The message a caller sees for `exc`: str(exc), cut to MAX_MESSAGE_BYTES of UTF-8."""
    text = str(exc)
    data = text.encode("utf-8")
    if len(data) <= MAX_MESSAGE_BYTES:
        return text
    marker = " … (message cut)"
    cut = data[: MAX_MESSAGE_BYTES - len(marker.encode())].decode("utf-8", "ignore")
    return cut + marker


# A policy refusal's rules and reasons travel in this trailing metadata entry, as JSON
# (binary, so reasons in any script survive): [{"recipient", "section", "rules",
# "reason"}, ...], at most MAX_REFUSALS of them (broker/client/errors.py reads it).
REFUSAL_KEY = "broker-refusal-bin"
MAX_REFUSALS = 16


def refusal_metadata(exc: errors.BrokerError) -> tuple[tuple[str, bytes], ...]:
    """The trailing metadata that carries `exc`'s refusals (none for other errors)."""
    if not isinstance(exc, errors.PolicyRefused) or not exc.refusals:
        return ()
    rows = [
        {"recipient": r.recipient, "section": r.section, "rules": list(r.rules), "reason": r.reason}
        for r in exc.refusals[:MAX_REFUSALS]
    ]
    data = json.dumps(rows, ensure_ascii=False).encode()
    while len(data) > MAX_MESSAGE_BYTES * 4 and len(rows) > 1:  # stay far below 8 KiB
        rows.pop()
        data = json.dumps(rows, ensure_ascii=False).encode()
    return ((REFUSAL_KEY, data),)


DETAILS_KEY = "grpc-status-details-bin"  # google.rpc.Status, the rich error model


def status_details(exc: errors.BrokerError) -> bytes:
    """The google.rpc.Status for `exc`, carrying a google.rpc.RetryInfo when the caller
    may retry after a delay (RateLimited); b"" when there is nothing to add."""
    if not isinstance(exc, errors.RateLimited):
        return b""
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromMilliseconds(exc.retry_after_ms)
    status = status_pb2.Status(code=status_of(exc).value[0], message=status_message(exc))
    status.details.add().Pack(info)
    data: bytes = status.SerializeToString()
    return data


async def abort(context: Any, exc: BaseException) -> NoReturn:
    """Abort the RPC with the status for `exc` (its message capped by status_message;
    a policy refusal's rules and reasons in the trailing metadata, a retry delay in the
    rich status details)."""
    if isinstance(exc, errors.BrokerError):
        details = status_details(exc)
        trailing = refusal_metadata(exc) + (((DETAILS_KEY, details),) if details else ())
        if trailing:
            await context.abort(status_of(exc), status_message(exc), trailing_metadata=trailing)
        await context.abort(status_of(exc), status_message(exc))
    log.error("unexpected error in RPC", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_TEXT)
    raise AssertionError("context.abort returned")  # it always raises


def unary_handler(
    label: str, call: Callable[[bytes, Any], Awaitable[Message]]
) -> grpc.RpcMethodHandler:
    """A unary handler over raw request bytes: `call(request, context)` answers; every
    error goes through `abort` (the one status table); each outcome is counted."""
    from broker.server import metrics

    async def run(request: bytes, context: Any) -> bytes:
        try:
            response = await call(request, context)
        except errors.BrokerError as exc:
            metrics.RPCS.labels(label, status_of(exc).name).inc()
            await abort(context, exc)
        except Exception as exc:
            metrics.RPCS.labels(label, "INTERNAL").inc()
            await abort(context, exc)
        metrics.RPCS.labels(label, "OK").inc()
        data: bytes = response.SerializeToString()
        return data

    return grpc.unary_unary_rpc_method_handler(run)
