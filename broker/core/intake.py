"""What a recipient's node decides for itself about a delivery, from signed data only.

The broker carries obligations, holds embargoed deliveries and tells nodes to delete
copies, but a lying broker could drop an obligation, release a notice early or order
an erasure that nobody signed. So the node works out, under the administrator-signed
policy and its own administrator-signed registry entry, from the originator-signed
header:

- the obligations the policy attaches to the sections it received, decided on
  :func:`recipient_facts` (the node caches the decision per notice shape, as publishers
  do: broker.core.decisions); where they differ from what the broker carried, the
  stricter union applies (:func:`stricter`) and the difference is reported;
- until when the policy holds the notice for it (an embargo), from the same decision;
- when its copy must be erased: the notice's signed expiry, or a maximum retention
  obligation, whichever comes first (:func:`erase_deadline`);
- whether a signed restriction update excludes it (:func:`excluded`).

The node does not see the originator's audience restrictions (only their salted digest),
so it evaluates as if none were set, except that it counts itself as named (it received
the notice, so any allow list named it: TLP:RED notices, requests to one executing
authority and replies to an originator carry one) and takes the embargo from the signed
header. Pure.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import replace
from typing import NamedTuple

from broker.core import relay
from broker.core.lru import Lru
from broker.core.policy import AgencyProfile, Bundle, NoticeFacts, Restrictions
from broker.v1 import notice_pb2

DAY_MS = 86_400_000
RETENTION = "max_retention_days"

Key = tuple[str, str, str]  # (section, kind, rule)


def recipient_facts(
    header: notice_pb2.NoticeHeader, me: str, sections: Sequence[str]
) -> NoticeFacts:
    """The facts a recipient's node decides its own copy on (see the module docstring):
    the signed header's, with itself as the one agency named."""
    # It counts itself as named: it received the notice, so an allow list (TLP:RED, a
    # request to one executing authority, a reply to its originator) named it.
    named = frozenset({me})
    facts = relay.facts_of(header, notice_pb2.OriginatorRestrictions(), sorted(sections))
    return replace(
        facts,
        restrictions=Restrictions(allow_agencies=named, embargo_until_ms=header.embargo_until_ms),
    )


def shape_key(
    header: notice_pb2.NoticeHeader, sections: tuple[str, ...], now_ms: int
) -> tuple[Hashable, ...]:
    """Every header field :func:`recipient_facts` reads, except the creation time (no
    decision depends on it: broker.core.decisions.shape_of), with the sections and whether
    the embargo is in force at `now_ms`: two deliveries with the same key (under the same
    policy and registry entry) get the same decision, so the node decides a key once
    (:class:`ExpectationCache`). Reading the header is cheaper than building the facts and
    hashing them (tests/core/test_intake.py checks that the key covers the facts)."""
    ev = header.evaluation
    return (
        header.originator,
        header.kind,
        header.purpose,
        header.tlp,
        tuple(header.handling_codes),
        header.data_subject,
        ev.source,
        ev.information,
        header.embargo_until_ms,
        header.embargo_until_ms > now_ms,
        sections,
    )


class Expectation(NamedTuple):
    """What the signed policy asks of this node for one notice shape."""

    obligations: tuple[notice_pb2.Obligation, ...]  # as the policy attaches them
    applied: tuple[notice_pb2.Obligation, ...]  # what applies if the broker carried those
    release_ms: int  # an embargo hold: when the notice may reach the application (0: now)


def expectation(obligations: Sequence[notice_pb2.Obligation], release_ms: int) -> Expectation:
    """The Expectation of a decided shape (the applied set worked out once)."""
    expected = tuple(obligations)
    return Expectation(expected, stricter(expected, expected)[0], release_ms)


def apply(
    delivered: Sequence[notice_pb2.Obligation], expected: Expectation
) -> tuple[tuple[notice_pb2.Obligation, ...], tuple[Key, ...], tuple[Key, ...]]:
    """`stricter(delivered, expected.obligations)`, answered from the Expectation when the
    broker carried exactly what the policy attaches (the usual case)."""
    want = expected.obligations
    if len(delivered) == len(want) and all(a == b for a, b in zip(delivered, want, strict=True)):
        return expected.applied, (), ()
    return stricter(delivered, want)


class ExpectationCache(Lru[tuple[Hashable, ...], Expectation]):
    """Expectations by (policy version, registry key, shape key), least recently used
    evicted first. The registry key must change whenever this node's signed registry
    entry or the policy changes (the node uses its view's digest)."""

    def __init__(self, limit: int = 4096) -> None:
        super().__init__(limit)


def _key(o: notice_pb2.Obligation) -> Key:
    return (o.section, o.kind, o.rule)


def stricter(
    delivered: Iterable[notice_pb2.Obligation], expected: Iterable[notice_pb2.Obligation]
) -> tuple[tuple[notice_pb2.Obligation, ...], tuple[Key, ...], tuple[Key, ...]]:
    """(what to apply, keys the broker dropped, keys the broker added).

    What applies is the union of both; where both carry a maximum retention for a
    section, the shorter one.
    """
    got = {_key(o): o for o in delivered}
    want = {_key(o): o for o in expected}
    dropped = tuple(sorted(set(want) - set(got)))
    added = tuple(sorted(set(got) - set(want)))
    union = {**got, **want}
    shortest: dict[str, notice_pb2.Obligation] = {}
    others = []
    for o in union.values():
        if o.kind == RETENTION:
            kept = shortest.get(o.section)
            if kept is None or o.days < kept.days:
                shortest[o.section] = o
        else:
            others.append(o)
    applied = tuple(sorted([*others, *shortest.values()], key=lambda o: (_key(o), o.days)))
    return applied, dropped, added


def erase_deadline(
    obligations: Iterable[notice_pb2.Obligation], received_at_ms: int, expires_at_ms: int
) -> int:
    """When the node must erase its copy: the signed expiry, or sooner a maximum retention."""
    deadline = expires_at_ms
    for o in obligations:
        if o.kind == RETENTION and o.days > 0:
            limit = received_at_ms + o.days * DAY_MS
            deadline = limit if deadline <= 0 else min(deadline, limit)
    return deadline


def excluded(
    restrictions: notice_pb2.OriginatorRestrictions, profile: AgencyProfile, policy: Bundle
) -> bool:
    """True when these restrictions leave `profile` out of the notice's audience."""
    r = relay.restrictions_of(restrictions)
    if profile.id in r.deny_agencies or profile.country in r.deny_countries:
        return True
    if any(policy.in_group(profile, g) for g in r.deny_groups):
        return True
    if r.has_allow_list:
        allowed = (
            profile.id in r.allow_agencies
            or profile.country in r.allow_countries
            or any(policy.in_group(profile, g) for g in r.allow_groups)
        )
        return not allowed
    return False


def proves_supersession(
    superseding: notice_pb2.NoticeHeader, version: int, notice_id: str, originator: str
) -> bool:
    """Whether a signed header proves that the originator published `version` or later of
    this notice, so that every version below `version` is superseded. The node erases only
    the versions below `version`: a version it holds that is as new as the header (it was
    put back in the audience by a later version) is kept, and the proof still holds."""
    return (
        superseding.notice_id == notice_id
        and superseding.originator == originator
        and version >= 1
        and superseding.version >= version
    )
