"""Typed errors of the SDK: what the broker refused, as exceptions that say the status,
the rule and the reason.

    grpc.aio.AioRpcError              (so existing ``except`` clauses keep working)
    └── BrokerRpcError                the broker answered with an error status
        ├── InvalidArgumentError      INVALID_ARGUMENT: fix the request
        ├── UnauthenticatedError      UNAUTHENTICATED: certificate unknown or revoked
        ├── PermissionDeniedError     PERMISSION_DENIED
        │   └── PolicyRefusedError    ... by the policy: `rule`, `rules`, `reason`, `refusals`
        ├── NotFoundError             NOT_FOUND
        ├── AlreadyExistsError        ALREADY_EXISTS
        ├── FailedPreconditionError   FAILED_PRECONDITION: the state does not allow it
        ├── ResourceExhaustedError    RESOURCE_EXHAUSTED: too large, too many
        ├── UnavailableError          UNAVAILABLE: retry later (the SDK already retried)
        └── DeadlineExceededError     DEADLINE_EXCEEDED

Every one has ``status`` (a grpc.StatusCode), ``reason`` (the broker's message) and
``rule`` (the first policy rule that refused, "" when none did). The AgencyNode's and
AdminClient's channels raise them (`TypedErrors`, a client interceptor).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from broker.errors import Refusal

REFUSAL_KEY = "broker-refusal-bin"  # broker/server/status.py writes it


class BrokerRpcError(grpc.aio.AioRpcError):  # type: ignore[misc]
    """The broker refused a call: `status`, `reason`, `rule`, `rules` and `refusals`."""

    def __init__(self, error: grpc.aio.AioRpcError, refusals: tuple[Refusal, ...] = ()) -> None:
        super().__init__(
            error.code(),
            error.initial_metadata(),
            error.trailing_metadata(),
            error.details(),
            error.debug_error_string(),
        )
        self.status: grpc.StatusCode = error.code()
        self.reason: str = error.details() or ""
        self.refusals = refusals
        rules: list[str] = []
        for r in refusals:
            rules += [rule for rule in r.rules if rule not in rules]
        self.rules: tuple[str, ...] = tuple(rules)
        self.rule: str = rules[0] if rules else ""

    def __str__(self) -> str:
        rule = f" [{', '.join(self.rules)}]" if self.rules else ""
        return f"{self.status.name}: {self.reason}{rule}"


class InvalidArgumentError(BrokerRpcError):
    pass


class UnauthenticatedError(BrokerRpcError):
    pass


class PermissionDeniedError(BrokerRpcError):
    pass


class PolicyRefusedError(PermissionDeniedError):
    """The policy refused: `refusals` name each recipient, section, rules and reason."""


class NotFoundError(BrokerRpcError):
    pass


class AlreadyExistsError(BrokerRpcError):
    pass


class FailedPreconditionError(BrokerRpcError):
    pass


class ResourceExhaustedError(BrokerRpcError):
    pass


class UnavailableError(BrokerRpcError):
    pass


class DeadlineExceededError(BrokerRpcError):
    pass


BY_STATUS: dict[grpc.StatusCode, type[BrokerRpcError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def refusals_of(error: grpc.aio.AioRpcError) -> tuple[Refusal, ...]:
    """The policy refusals the broker sent beside the status (none if it sent none, or
    sent something unreadable)."""
    for key, value in error.trailing_metadata() or ():
        if key != REFUSAL_KEY or not isinstance(value, bytes):
            continue
        try:
            rows = json.loads(value.decode())
            return tuple(
                Refusal(
                    str(r["recipient"]),
                    str(r["section"]),
                    tuple(str(x) for x in r["rules"]),
                    str(r["reason"]),
                )
                for r in rows
            )
        except (ValueError, KeyError, TypeError):
            return ()
    return ()


def typed(error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    """`error` as its typed subclass (itself if it already is one, or has no type)."""
    if isinstance(error, BrokerRpcError):
        return error
    cls = BY_STATUS.get(error.code())
    if cls is None:
        return error
    refusals = refusals_of(error)
    if refusals and cls is PermissionDeniedError:
        cls = PolicyRefusedError
    return cls(error, refusals)


class TypedErrors(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """A client interceptor: unary calls raise typed errors instead of bare AioRpcError."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            raise typed(exc) from None
        return call
