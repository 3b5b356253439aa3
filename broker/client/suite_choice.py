"""Which suite a node seals a notice with, and why it refuses one (docs/post-quantum.md).

"classical" and "hybrid" are taken as asked: hybrid needs this agency's own PQ keys and,
for every recipient, a key statement that carries PQ keys; otherwise the node refuses
and says whose statement lacks them and what to do. "auto" seals hybrid when everyone
concerned can, else classical: the setting for the migration period.
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.core.envelope import SUITE, SUITE_HYBRID
from broker.core.hybrid import suite_of
from broker.core.identity import AgencyKeys
from broker.errors import FailedPrecondition, InvalidArgument

AUTO = "auto"
CHOICES = ("auto", "classical", "hybrid")


def choose_suite(
    requested: str, me: str, my_keys_hybrid: bool, recipients: Mapping[str, AgencyKeys]
) -> str:
    """Return the suite id to seal with for `recipients` (agency id -> verified keys).

    Raises InvalidArgument for an unknown name; FailedPrecondition when the hybrid suite
    is asked for and this agency or a recipient has no post-quantum keys.
    """
    lacking = sorted(a for a, k in recipients.items() if not k.supports_hybrid)
    if requested == AUTO:
        return SUITE_HYBRID if my_keys_hybrid and not lacking else SUITE
    try:
        suite = suite_of(requested)
    except ValueError:
        raise InvalidArgument(f"suite {requested!r} is unknown; use one of {CHOICES}") from None
    if suite != SUITE_HYBRID:
        return suite
    if not my_keys_hybrid:
        raise FailedPrecondition(
            f"{me} has no post-quantum keys, so it cannot seal the hybrid suite; issue them "
            f"with `broker keys rotate agency {me} --pq` and register the new statement"
        )
    if lacking:
        shown = ", ".join(f"{a} (statement serial {recipients[a].serial})" for a in lacking)
        raise FailedPrecondition(
            f"cannot seal the hybrid suite: the key statement of {shown} carries no "
            "post-quantum keys, so it could not open the notice; seal with the classical "
            "suite (or auto), or ask them to rotate their keys with --pq"
        )
    return suite
