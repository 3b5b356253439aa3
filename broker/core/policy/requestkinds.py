"""The catalogue's judicial request kinds: measures, refusal grounds and time limits.

A request kind is a catalogue kind named ``request.<name>`` with a ``request`` table::

    [kinds."request.eio".request]
    instrument = "Directive 2014/41/EU (European Investigation Order)"
    measures = ["hearing_witness", "search_seizure"]     # what may be asked (may be empty)
    grounds = ["eio.11.1.a", "eio.11.1.b"]               # refusal grounds, as codes
    consent_decision_hours = 0                           # EAW: decision within 10 days of consent
    [kinds."request.eio".request.deadlines.normal]
    decision_hours = 720       # recognise or refuse within 30 days of receipt (Art. 12(3))
    execution_hours = 2160     # execute within 90 days of recognition (Art. 12(4))
    execution_from = "decision"  # or "receipt": the execution clock starts at receipt
    remind_hours = 120         # remind both parties this long before a limit passes
    [kinds."request.eio".request.deadlines.urgent]
    ...

Both priorities (``normal``, ``urgent``) must be given; ``decision_hours = 0`` means
the kind has no separate decision limit (a production order is answered, not
recognised). Labels for the kind, its sections, measures and grounds live in the
catalogue's ``[labels]`` table (:mod:`broker.core.policy.labels`).

Parsing only; the hook in :mod:`broker.core.policy.source.catalogue` calls
:func:`parse_request` with a callback that raises its located PolicyError.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

PREFIX: Final = "request."
PRIORITIES: Final = ("normal", "urgent")
# The request lifecycle's states and steps (rules: broker/core/requests.py); named here
# so the catalogue's labels can be checked against them.
STATES: Final = (
    "issued",
    "received",
    "info_requested",
    "recognised",
    "in_execution",
    "executed",
    "refused",
    "withdrawn",
)
DEADLINES: Final = ("decision", "execution", "overdue")  # time limits, as labelled
FINAL_STATES: Final = frozenset({"executed", "refused", "withdrawn"})
STEPS: Final = (
    "issue",
    "receive",
    "recognise",
    "refuse",
    "ask_info",
    "provide_info",
    "partial",
    "execute",
    "withdraw",
    "consent",
)
EXECUTION_FROM: Final = ("decision", "receipt")
REQUEST_KEYS: Final = frozenset(
    {"instrument", "measures", "grounds", "consent_decision_hours", "deadlines"}
)
DEADLINE_KEYS: Final = frozenset(
    {"decision_hours", "execution_hours", "execution_from", "remind_hours"}
)
MAX_HOURS: Final = 24 * 366 * 2  # no judicial time limit here runs past two years
_CODE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# fail(message, key or None) raises a PolicyError located at that key of the table.
Fail = Callable[[str, str | None], NoReturn]


@dataclass(frozen=True)
class Deadlines:
    """The time limits of one priority, in hours (0: no such limit)."""

    decision_hours: int
    execution_hours: int
    execution_from: str = "decision"
    remind_hours: int = 0


@dataclass(frozen=True)
class RequestSpec:
    """What the catalogue says of one request kind."""

    kind: str
    instrument: str
    measures: tuple[str, ...]
    grounds: tuple[str, ...]
    deadlines: Mapping[str, Deadlines]  # by priority: normal, urgent
    consent_decision_hours: int = 0

    def limits(self, priority: str) -> Deadlines:
        """The time limits for `priority` (normal or urgent)."""
        return self.deadlines[priority]


def _hours(value: Any, where: str, fail: Fail, key: str, *, zero: bool) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < (0 if zero else 1)
        or value > MAX_HOURS
    ):
        least = "0" if zero else "1"
        fail(f"{where} must be an integer from {least} to {MAX_HOURS} (hours)", key)
    return value


def _codes(value: Any, where: str, fail: Fail, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail(f"{where} must be a list of codes", key)
    for v in value:
        if not _CODE.match(v):
            fail(f"{where}: code {v[:32]!r}: use lower-case letters, digits, '.', '_', '-'", key)
    if len(set(value)) != len(value):
        fail(f"{where} lists a code twice", key)
    return tuple(value)


def _deadlines(table: Any, where: str, fail: Fail) -> Deadlines:
    if not isinstance(table, dict):
        fail(f"{where} must be a table", "deadlines")
    extra = sorted(set(table) - DEADLINE_KEYS)
    if extra:
        fail(
            f"{where} has unknown key {extra[0]!r} (allowed: {', '.join(sorted(DEADLINE_KEYS))})",
            "deadlines",
        )
    if "execution_hours" not in table:
        fail(f"{where} needs execution_hours", "deadlines")
    decision = _hours(
        table.get("decision_hours", 0), f"{where}.decision_hours", fail, "deadlines", zero=True
    )
    execution = _hours(
        table["execution_hours"], f"{where}.execution_hours", fail, "deadlines", zero=False
    )
    remind = _hours(
        table.get("remind_hours", 0), f"{where}.remind_hours", fail, "deadlines", zero=True
    )
    start = table.get("execution_from", "decision")
    if start not in EXECUTION_FROM:
        fail(f"{where}.execution_from must be decision or receipt", "deadlines")
    if start == "decision" and not decision:
        fail(f"{where}: execution_from = 'decision' needs decision_hours", "deadlines")
    return Deadlines(decision, execution, start, remind)


def parse_request(kind: str, table: Any, where: str, fail: Fail) -> RequestSpec:
    """Parse one kind's ``request`` table; `fail` raises the located PolicyError."""
    where = f"{where}.request"
    if not kind.startswith(PREFIX):
        fail(f"only request.* kinds take a request table ({kind} is not one)", None)
    if not isinstance(table, dict):
        fail(f"{where} must be a table", None)
    extra = sorted(set(table) - REQUEST_KEYS)
    if extra:
        fail(
            f"{where} has unknown key {extra[0]!r} (allowed: {', '.join(sorted(REQUEST_KEYS))})",
            extra[0],
        )
    instrument = table.get("instrument")
    if not isinstance(instrument, str) or not instrument.strip():
        fail(f"{where}.instrument must name the legal instrument", "instrument")
    measures = _codes(table.get("measures", []), f"{where}.measures", fail, "measures")
    grounds = _codes(table.get("grounds", []), f"{where}.grounds", fail, "grounds")
    if not grounds:
        fail(f"{where}.grounds must list the refusal grounds of {kind}", "grounds")
    consent = _hours(
        table.get("consent_decision_hours", 0),
        f"{where}.consent_decision_hours",
        fail,
        "consent_decision_hours",
        zero=True,
    )
    limits = table.get("deadlines")
    if not isinstance(limits, dict) or sorted(limits) != sorted(PRIORITIES):
        fail(f"{where}.deadlines needs exactly the tables normal and urgent", "deadlines")
    parsed = {p: _deadlines(limits[p], f"{where}.deadlines.{p}", fail) for p in PRIORITIES}
    for name in ("decision_hours", "execution_hours"):
        if getattr(parsed["urgent"], name) > getattr(parsed["normal"], name):
            fail(f"{where}: urgent {name} must not exceed normal {name}", "deadlines")
    return RequestSpec(kind, instrument, measures, grounds, parsed, consent)


def check_kinds(kinds: Mapping[str, object], requests: Mapping[str, RequestSpec]) -> str:
    """Return the first request.* kind without a request table ('' when all have one)."""
    for name in sorted(kinds):
        if name.startswith(PREFIX) and name not in requests:
            return name
    return ""
