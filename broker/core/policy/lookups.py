"""The catalogue's lookup declarations: which selectors a kind is searchable by, and
what a hit releases.

A kind is searchable when its catalogue entry has a ``lookup`` table::

    [kinds."sis.art26".lookup]
    selectors = ["travel_document", "person"]   # types from broker.core.selectors
    release = "action"                          # what any querier learns on a hit
    release_by_role = { sirene = "kind" }       # per authority type, where it differs
    action = "Arrest the person and contact the SIRENE bureau"
    respond_within_hours = 12                   # the originator answers the hit by then

Release levels, each including the ones before it:

- ``contact``: a hit, the originator and the notice reference, so the querier
  can contact the originator (Prüm: hit/no-hit and a reference number);
- ``kind``: also the notice kind;
- ``action``: also the action to take on a hit (``action`` above).

A querier that already holds the notice (it was sealed for it) also learns
which notice and version to open: the notice itself, for an allowed recipient.
A querier with several roles gets the widest level among them.

Parsing only; the hook in :mod:`broker.core.policy.source.catalogue` calls
:func:`parse_lookup` with a callback that raises its located PolicyError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from broker.core.selectors import SELECTOR_TYPES

RELEASE_LEVELS: Final = ("contact", "kind", "action")
LOOKUP_KEYS: Final = frozenset(
    {"selectors", "release", "release_by_role", "action", "respond_within_hours"}
)
MAX_RESPOND_HOURS: Final = 24 * 90

# fail(message, key or None) raises a PolicyError located at that key of the table.
Fail = Callable[[str, str | None], NoReturn]


@dataclass(frozen=True)
class LookupSpec:
    """What the catalogue says of lookups on one kind."""

    kind: str
    selectors: tuple[str, ...]
    release: str = "contact"
    release_by_role: Mapping[str, str] = field(default_factory=dict)
    action: str = ""
    respond_within_hours: int = 12

    def level_for(self, roles: Iterable[str]) -> str:
        """The widest release level among the querier's roles (the default for none)."""
        levels = [self.release] + [
            self.release_by_role[r] for r in roles if r in self.release_by_role
        ]
        return max(levels, key=RELEASE_LEVELS.index)


def _level(value: Any, where: str, key: str, fail: Fail) -> str:
    if value not in RELEASE_LEVELS:
        fail(f"{where}.{key} is {value!r}: use one of {', '.join(RELEASE_LEVELS)}", key)
    return str(value)


def parse_lookup(
    kind: str,
    table: Any,
    where: str,
    authorities: Mapping[str, str],
    fail: Fail,
) -> LookupSpec:
    """Validate a kind's ``lookup`` table and return its LookupSpec."""
    where = f"{where}.lookup"
    if not isinstance(table, dict):
        fail(f"{where} must be a table", None)
    extra = sorted(set(table) - LOOKUP_KEYS)
    if extra:
        fail(f"{where} has unknown key {extra[0]!r} (allowed: {', '.join(sorted(LOOKUP_KEYS))})",
             extra[0])  # fmt: skip
    selectors = table.get("selectors")
    if not isinstance(selectors, list) or not selectors:
        fail(f"{where}.selectors must be a non-empty list of selector types", "selectors")
    for s in selectors:
        if s not in SELECTOR_TYPES:
            fail(
                f"{where}.selectors names {s!r}; use {', '.join(SELECTOR_TYPES)}",
                "selectors",
            )
    if len(set(selectors)) != len(selectors):
        fail(f"{where}.selectors lists a type twice", "selectors")
    release = _level(table.get("release", "contact"), where, "release", fail)
    by_role = table.get("release_by_role", {})
    if not isinstance(by_role, dict):
        fail(
            f"{where}.release_by_role must be a table of authority type = level", "release_by_role"
        )
    for role, level in by_role.items():
        if role not in authorities:
            fail(f"{where}.release_by_role names {role!r}, which is not in [authorities]",
                 "release_by_role")  # fmt: skip
        _level(level, where, "release_by_role", fail)
    action = table.get("action", "")
    if not isinstance(action, str) or len(action) > 512:
        fail(f"{where}.action must be text of at most 512 characters", "action")
    if "action" in (release, *by_role.values()) and not action:
        fail(f'{where} releases the action on a hit: give it as action = "..."', None)
    hours = table.get("respond_within_hours", 12)
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_RESPOND_HOURS:
        fail(f"{where}.respond_within_hours must be a whole number of hours from 1 to "
             f"{MAX_RESPOND_HOURS}", "respond_within_hours")  # fmt: skip
    return LookupSpec(
        kind=kind,
        selectors=tuple(selectors),
        release=release,
        release_by_role=dict(sorted(by_role.items())),
        action=action,
        respond_within_hours=hours,
    )
