"""Decision records: the JSON form of what the policy saw and decided.

One record per published notice version: the notice facts, each recipient's
profile, and every (recipient, section) decision with its rules. Its SHA-256
goes into the transparency log; auditors rebuild the facts and profiles from it
(`facts_from_record`, `profile_from_record`) and re-evaluate the decisions under
the bundle it names. Every field of NoticeFacts, Restrictions and AgencyProfile
is written, so a decision that depends on any of them replays exactly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from broker.core.policy import AgencyProfile, NoticeFacts, RecipientDecision
from broker.core.policy.model import Restrictions


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def facts_json(facts: NoticeFacts) -> dict[str, Any]:
    """Every field of the facts (and their restrictions) as JSON values."""
    out: dict[str, Any] = _plain(facts)
    return out


def profile_json(profile: AgencyProfile) -> dict[str, Any]:
    out: dict[str, Any] = _plain(profile)
    return out


def decision_record(
    policy_version: str,
    facts: NoticeFacts | None,
    recipients: Iterable[AgencyProfile],
    decisions: Iterable[RecipientDecision],
) -> str:
    """The canonical JSON record (sorted keys) of one notice version's decisions."""
    return json.dumps(
        {
            "policy_version": policy_version,
            "notice": None if facts is None else facts_json(facts),
            "recipients": [profile_json(p) for p in recipients],
            "decisions": [
                {
                    "recipient": d.recipient,
                    "section": d.section,
                    "allowed": d.allowed,
                    "rules": list(d.rules),
                }
                for rd in decisions
                for d in rd.decisions
            ],
        },
        sort_keys=True,
    )


def _fields(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _restrictions(raw: Any) -> Restrictions:
    values: dict[str, Any] = {}
    for name, value in (raw or {}).items():
        if name in _fields(Restrictions):
            values[name] = frozenset(value) if isinstance(value, list) else value
    return Restrictions(**values)


def facts_from_record(raw: Mapping[str, Any]) -> NoticeFacts:
    """The NoticeFacts a decision record says the policy saw (unknown keys are ignored)."""
    values: dict[str, Any] = {}
    for name in _fields(NoticeFacts) & set(raw):
        value = raw[name]
        if name == "restrictions":
            value = _restrictions(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return NoticeFacts(**values)


def profile_from_record(raw: Mapping[str, Any]) -> AgencyProfile:
    """The AgencyProfile a decision record says the policy saw (lists become frozensets)."""
    values: dict[str, Any] = {}
    for name in _fields(AgencyProfile) & set(raw):
        value = raw[name]
        values[name] = frozenset(value) if isinstance(value, list) else value
    return AgencyProfile(**values)
