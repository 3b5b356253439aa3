"""Which suite a node seals a notice with, and why it refuses one (docs/post-quantum.md).

"classical" and "hybrid" are taken as asked: hybrid needs this agency's own PQ keys and,
for every recipient, a key statement that carries PQ keys; otherwise the node refuses
and says whose statement lacks them and what to do. "auto" seals hybrid when everyone
concerned can, else classical: the setting for the migration period. A kind whose
catalogue entry in the signed policy lists `suites` is sealed only with one of them
(auto picks hybrid for a kind that requires it), refused otherwise with the message
the broker would give at Publish.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from broker.core.envelope import SUITE, SUITE_HYBRID
from broker.core.hybrid import suite_of
from broker.core.identity import AgencyKeys
from broker.core.suites import SuitePolicy
from broker.errors import FailedPrecondition, InvalidArgument

AUTO = "auto"
CHOICES = ("auto", "classical", "hybrid")


def choose_suite(
    requested: str,
    me: str,
    my_keys_hybrid: bool,
    recipients: Mapping[str, AgencyKeys],
    kind: str = "",
    required: Collection[str] = (),
) -> str:
    """Return the suite id to seal with for `recipients` (agency id -> verified keys).

    `required` are the suites the signed policy's catalogue requires for `kind` (empty:
    any): "auto" then picks among them, and a suite outside them is refused with the
    broker's own message (broker/core/suites.py).
    Raises InvalidArgument for an unknown name; FailedPrecondition when the hybrid suite
    is asked for and this agency or a recipient has no post-quantum keys, or the suite
    is not one the policy allows for the kind.
    """
    lacking = sorted(a for a, k in recipients.items() if not k.supports_hybrid)
    if requested == AUTO and required and SUITE not in required:
        requested = SUITE_HYBRID  # the kind demands hybrid: say who lacks PQ keys, if anyone
    if requested == AUTO:
        suite = SUITE_HYBRID if my_keys_hybrid and not lacking else SUITE
        SuitePolicy().check(suite, kind, required)
        return suite
    try:
        suite = suite_of(requested)
    except ValueError:
        raise InvalidArgument(f"suite {requested!r} is unknown; use one of {CHOICES}") from None
    SuitePolicy().check(suite, kind, required)  # the policy's part, before sealing
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
