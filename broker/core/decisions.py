"""Policy decisions for the hot path: decided once per notice shape, reused after.

A publish asks, for every wrap, whether the policy in force lets that recipient
read those sections; a node resolving an audience asks the same of every agency.
The answer depends only on the bundle, the registry and the notice's *shape*:
the facts the engine reads (originator, kind, purpose, TLP, sections, handling
and evaluation codes, data subject, restrictions) and whether an embargo is in
force, never on the notice id, its times or its contents. So a shape is decided
once, by the compiled masks (`Bundle.evaluate`), and every later notice of the
same shape under the same bundle and registry reuses that outcome:

- `allowed(recipient)` is a mask lookup;
- explanations (rules, reasons, obligations, embargo holds) are built only when
  something is refused or held, or when obligations must travel with a
  delivery, once per (shape, recipient), and kept;
- the JSON decision record of a notice version (see :mod:`broker.core.records`)
  is assembled from per-recipient fragments made once per (shape, recipient),
  byte for byte what `records.decision_record` would write.

The cache is keyed by (bundle version, registry key, shape). The registry key is
whatever the caller derives from the registry contents (the broker uses a digest
of every profile), so a registry or policy change can never be answered from an
older entry. Pure: `now_ms` is a parameter; the cache is bounded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence

from broker.core import records
from broker.core.delivery import encode_obligations
from broker.core.lru import Lru
from broker.core.policy import AgencyProfile, Bundle, NoticeFacts, RecipientDecision
from broker.core.policy.engine import Outcome
from broker.v1 import notice_pb2

__all__ = ["DecisionCache", "ShapeOutcome", "shape_of"]

DEFAULT_LIMIT = 4096


def shape_of(facts: NoticeFacts, now_ms: int) -> tuple[NoticeFacts, bool]:
    """What a decision depends on: the facts without their creation time, and whether an
    embargo is in force at `now_ms`."""
    return (
        dataclasses.replace(facts, created_at_ms=0),
        facts.restrictions.embargo_until_ms > now_ms,
    )


class ShapeOutcome:
    """One notice shape decided for every registered agency; explained lazily, per
    recipient, once."""

    __slots__ = (
        "_decisions",
        "_fragments",
        "_obligations",
        "_profiles",
        "_wire",
        "embargoed",
        "outcome",
        "pos",
    )

    def __init__(
        self,
        outcome: Outcome,
        profiles: Mapping[str, AgencyProfile],
        embargoed: bool,
    ) -> None:
        self.outcome = outcome
        self.pos: Mapping[str, int] = outcome.idx.pos
        self.embargoed = embargoed
        self._profiles = profiles
        self._decisions: dict[str, RecipientDecision] = {}
        self._fragments: dict[str, tuple[str, str]] = {}
        self._obligations: dict[tuple[str, tuple[str, ...]], tuple[notice_pb2.Obligation, ...]] = {}
        self._wire: dict[tuple[str, tuple[str, ...]], bytes] = {}

    def known(self, recipient: str) -> bool:
        return recipient in self.pos

    def allowed(self, recipient: str) -> frozenset[str]:
        """Sections `recipient` may read (empty for an unknown recipient)."""
        pos = self.pos.get(recipient)
        if pos is None:
            return frozenset()
        return self.outcome.allowed_sections(pos)

    def decision(self, recipient: str) -> RecipientDecision:
        """The explained decision for a registered recipient (built once)."""
        got = self._decisions.get(recipient)
        if got is None:
            got = RecipientDecision(recipient, self.outcome.explain(self.pos[recipient]))
            self._decisions[recipient] = got
        return got

    def deliver_after_ms(self, recipient: str, sections: Iterable[str]) -> int:
        """When the sections may be delivered (an embargo hold), 0 for at once."""
        if not self.embargoed:
            return 0  # holds apply only while an embargo is in force
        wanted = set(sections)
        return max(
            (
                d.deliver_after_ms
                for d in self.decision(recipient).decisions
                if d.allowed and d.section in wanted
            ),
            default=0,
        )

    def obligations(
        self, recipient: str, sections: tuple[str, ...]
    ) -> tuple[notice_pb2.Obligation, ...]:
        """What the policy asks of `recipient` for the allowed ones among `sections`, as
        the wire obligations a delivery carries (built once per recipient and sections)."""
        key = (recipient, sections)
        got = self._obligations.get(key)
        if got is None:
            got = tuple(
                notice_pb2.Obligation(
                    section=d.section, kind=o.kind, text=o.text, rule=o.rule, days=o.days
                )
                for d in self.decision(recipient).decisions
                if d.allowed and d.section in sections
                for o in d.obligations
            )
            self._obligations[key] = got
        return got

    def wire_obligations(self, recipient: str, sections: tuple[str, ...]) -> bytes:
        """`obligations(recipient, sections)` as a delivery's encoded field 7 entries,
        encoded once per shape rather than once per delivery."""
        key = (recipient, sections)
        got = self._wire.get(key)
        if got is None:
            got = encode_obligations(self.obligations(recipient, sections))
            self._wire[key] = got
        return got

    def fragments(self, recipient: str) -> tuple[str, str]:
        """(profile JSON, decisions JSON) of one recipient, as records.decision_record
        writes them inside its "recipients" and "decisions" lists."""
        got = self._fragments.get(recipient)
        if got is None:
            profile = json.dumps(records.profile_json(self._profiles[recipient]), sort_keys=True)
            decisions = ", ".join(
                json.dumps(
                    {
                        "recipient": d.recipient,
                        "section": d.section,
                        "allowed": d.allowed,
                        "rules": list(d.rules),
                    },
                    sort_keys=True,
                )
                for d in self.decision(recipient).decisions
            )
            got = (profile, decisions)
            self._fragments[recipient] = got
        return got


class DecisionCache:
    """Bounded cache of ShapeOutcomes, least recently used evicted first."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._entries: Lru[tuple[str, str, NoticeFacts, bool], ShapeOutcome] = Lru(limit)
        self.limit = limit
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def outcome(
        self,
        policy: Bundle,
        registry_key: str,
        profiles: Sequence[AgencyProfile],
        facts: NoticeFacts,
        now_ms: int,
    ) -> ShapeOutcome:
        """The outcome of `facts`' shape over `profiles` under `policy`.

        `registry_key` must change whenever `profiles` change (the caller's digest of
        them); an entry is never shared across bundle versions or registry keys.
        """
        shape, embargoed = shape_of(facts, now_ms)
        key = (policy.version, registry_key, shape, embargoed)
        got = self._entries.get(key)
        if got is not None:
            self.hits += 1
            return got
        self.misses += 1
        # Decide the shape at a time consistent with the embargo flag of the key: any
        # `now` on the same side of embargo_until_ms decides it the same way.
        outcome = policy.evaluate(facts, profiles, now_ms=now_ms)
        got = ShapeOutcome(outcome, {p.id: p for p in profiles}, embargoed)
        self._entries.put(key, got)
        return got


def decision_record(
    policy_version: str,
    facts: NoticeFacts,
    shape: ShapeOutcome,
    recipients: Sequence[str],
) -> str:
    """The JSON decision record of one notice version for `recipients` (in order), equal
    byte for byte to records.decision_record over the same facts, profiles and decisions,
    but assembled from per-recipient fragments built once per shape."""
    parts = [shape.fragments(r) for r in recipients]
    decisions = ", ".join(d for _p, d in parts if d)
    profiles = ", ".join(p for p, _d in parts)
    notice = json.dumps(records.facts_json(facts), sort_keys=True)
    return (
        f'{{"decisions": [{decisions}], "notice": {notice}, '
        f'"policy_version": {json.dumps(policy_version)}, "recipients": [{profiles}]}}'
    )


def decided_under(
    policy_version: str, registry_key: str, restrictions_key: str, embargo_until_ms: int
) -> str:
    """What a delivery's decision depended on, as stored with it: the bundle, the
    registry, the restrictions in force ("" for the envelope's own) and, while an
    embargo held it, when that embargo ends (0 otherwise)."""
    return f"{policy_version}|{registry_key}|{restrictions_key}|{embargo_until_ms}"


def still_decided(
    token: str, policy_version: str, registry_key: str, restrictions_key: str, now_ms: int
) -> bool:
    """True when a delivery decided under `token` would be decided the same way now: same
    bundle, registry and restrictions, and no embargo ended since. The forwarding-time
    re-check may then be skipped; any change (or an unreadable token) means re-check."""
    parts = token.split("|")
    if len(parts) != 4 or not parts[3].isdigit():
        return False
    policy, registry, restrictions, embargo = parts
    if (policy, registry, restrictions) != (policy_version, registry_key, restrictions_key):
        return False
    return int(embargo) == 0 or now_ms < int(embargo)
