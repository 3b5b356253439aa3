"""+ post-quantum: the envelope suites a catalogue kind requires (pure).

    [kinds."interpol.red"]
    suites = ["hybrid"]          # short names ("classical", "hybrid") or full suite ids

A kind that lists suites may be sealed only with one of them; a kind without the key
takes any suite the deployment allows. The broker intersects this with broker.toml's
[crypto] (broker/core/suites.py) and refuses the rest at Publish; the SDK refuses before
sealing, with the same message. Because it is in the signed bundle, a broker operator
cannot quietly drop the requirement without an administrator's signed activation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from broker.core.bounds import quote
from broker.core.hybrid import SUITE_NAMES, suite_of


def parse_suites(
    value: Any, where: str, fail: Callable[[str, str | None], NoReturn]
) -> tuple[str, ...]:
    """Return the suite ids of a kind's ``suites`` (sorted, each once).

    `fail(message, needle)` raises the policy error at the key (or at `needle` in it):
    for a value that is not a non-empty list of strings, an unknown suite, or a repeat.
    """
    choices = ", ".join(f'"{n}"' for n in sorted(SUITE_NAMES))
    if not isinstance(value, list) or not value:
        fail(f"{where}.suites must be a non-empty list of suite names: {choices}", None)
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            fail(f"{where}.suites must list suite names as strings: {choices}", None)
        try:
            suite = suite_of(item)
        except ValueError:
            fail(f"{where}.suites names unknown suite {quote(item)}; use {choices}", item)
        if suite in out:
            fail(f"{where}.suites lists {quote(item)} twice", item)
        out.append(suite)
    return tuple(sorted(out))
