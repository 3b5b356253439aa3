"""Which envelope suites a deployment accepts, overall and per notice kind (broker.toml [crypto],
and the signed policy's catalogue: ``suites`` of a kind, broker/core/policy/kindsuites.py).

A broker refuses, on Publish, an envelope whose suite the deployment does not allow, or
that its kind's own list does not allow (a kind listed in [crypto.kinds] may demand the
hybrid suite while the rest of the deployment still accepts both: the migration of
docs/post-quantum.md). What the policy requires of a kind is intersected with broker.toml's
lists; the SDK checks the policy's part before sealing, with the same message. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from broker.core.bounds import quote
from broker.core.hybrid import SUITES, short_name
from broker.errors import FailedPrecondition


def _all() -> frozenset[str]:
    return frozenset(SUITES)


@dataclass(frozen=True)
class SuitePolicy:
    """Suites allowed (full ids); `kinds` narrows them for some notice kinds."""

    allowed: frozenset[str] = field(default_factory=_all)
    kinds: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    def allowed_for(self, kind: str, policy: Collection[str] = ()) -> frozenset[str]:
        """Return the suites a notice of `kind` may use: the kind's list within the allowed,
        within `policy` too if given (the signed bundle's catalogue entry for the kind)."""
        own = self.kinds.get(kind)
        allowed = self.allowed if own is None else self.allowed & own
        return allowed & frozenset(policy) if policy else allowed

    def check(self, suite: str, kind: str, policy: Collection[str] = ()) -> None:
        """Raise FailedPrecondition unless a notice of `kind` may be sealed with `suite`
        (`policy`: the suites the active policy's catalogue requires for the kind)."""
        allowed = self.allowed_for(kind, policy)
        if suite in allowed:
            return
        names = sorted(short_name(s) for s in allowed)
        narrowed = kind in self.kinds or bool(policy)
        where = f"notices of kind {quote(kind)}" if narrowed else "this deployment"
        raise FailedPrecondition(
            f"suite {quote(short_name(suite))} is not allowed for {where}; seal with "
            f"{' or '.join(names) if names else 'no suite (none is allowed)'}"
        )
