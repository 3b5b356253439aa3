"""The one error family.

    BrokerError                 base: a reason a caller can act on
    ├── InvalidArgument         malformed or out-of-range input
    ├── Unauthenticated         no or unknown identity
    ├── PermissionDenied        identity known, action not allowed
    │   └── PolicyRefused       the policy refused it: carries each rule and reason
    ├── NotFound
    ├── AlreadyExists           same id, different content (a replay that is not idempotent)
    ├── FailedPrecondition      state does not allow it (expired, revoked, stale)
    ├── ResourceExhausted       too large, too many
    │   └── RateLimited         over a quota: retry after `retry_after_ms` (RetryInfo)
    ├── Aborted                 the call was ended by a newer one (a displaced Subscribe)
    └── Unavailable             try again later

`broker.server.status` maps each to exactly one gRPC status code; anything else
is an internal error answered with fixed text.
"""

from __future__ import annotations

from dataclasses import dataclass

# What the broker answers (status INTERNAL) for anything unexpected; details stay in its log.
INTERNAL_TEXT = "internal error; the broker logged it"


class BrokerError(Exception):
    """Base of every expected error; str(exc) is safe to show the caller."""


class InvalidArgument(BrokerError):
    pass


class Unauthenticated(BrokerError):
    pass


class PermissionDenied(BrokerError):
    pass


@dataclass(frozen=True)
class Refusal:
    """One refusal by the policy: who may not read which section, under which rules, why."""

    recipient: str
    section: str
    rules: tuple[str, ...]
    reason: str


class PolicyRefused(PermissionDenied):
    """The policy refused the request; `refusals` say for whom, which rules and why (the
    broker sends them to the caller beside the status, broker/server/status.py)."""

    def __init__(self, message: str, refusals: tuple[Refusal, ...] = ()) -> None:
        super().__init__(message)
        self.refusals = refusals


def prefixed(exc: BrokerError, prefix: str) -> BrokerError:
    """`exc` again with `prefix` before its message (a policy refusal keeps its refusals)."""
    if not prefix:
        return exc
    if isinstance(exc, PolicyRefused):
        return type(exc)(f"{prefix}{exc}", exc.refusals)
    return type(exc)(f"{prefix}{exc}")


class NotFound(BrokerError):
    pass


class AlreadyExists(BrokerError):
    pass


class FailedPrecondition(BrokerError):
    pass


class ResourceExhausted(BrokerError):
    pass


class RateLimited(ResourceExhausted):
    """Over an agency's rate limit or quota; the caller may retry after `retry_after_ms`."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Aborted(BrokerError):
    pass


class Unavailable(BrokerError):
    pass
