"""The [crypto] table of broker.toml: which envelope suites the broker accepts.

    [crypto]
    suites = ["classical", "hybrid"]      # allowed in the deployment (default: both)

    [crypto.kinds]                        # optional: kinds that demand fewer suites
    "interpol.red" = ["hybrid"]

Names are the short ones ("classical", "hybrid") or full suite ids. Errors name the
file, line and column (docs/post-quantum.md walks a migration through these settings).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from broker.core import bounds
from broker.core.hybrid import SUITE_NAMES, suite_of
from broker.core.suites import SuitePolicy
from broker.errors import BrokerError
from broker.tomlfile import TomlText

_KEYS = ("suites", "kinds")


def _suites(value: Any, where: str, error: type[BrokerError]) -> frozenset[str]:
    choices = ", ".join(f'"{n}"' for n in sorted(SUITE_NAMES))
    if not isinstance(value, list) or not value:
        raise error(f"{where} must be a non-empty list of suites: {choices}")
    out = set()
    for item in value:
        if not isinstance(item, str):
            raise error(f"{where} must list suite names as strings: {choices}")
        try:
            out.add(suite_of(item))
        except ValueError:
            raise error(f"{where}: unknown suite {bounds.quote(item)}; use {choices}") from None
    return frozenset(out)


def check_crypto(src: TomlText, table: dict[str, Any], error: type[BrokerError]) -> SuitePolicy:
    """Return the SuitePolicy of a [crypto] table. Raises `error` (file:line:column: what)."""
    for key in table:
        if key not in _KEYS:
            raise error(
                f"{src.where(('crypto',), key)}: unknown key {bounds.quote(key)} in [crypto]: "
                f"use one of {', '.join(_KEYS)}"
            )
    policy = SuitePolicy()
    allowed = policy.allowed
    if "suites" in table:
        allowed = _suites(
            table["suites"], f"{src.where(('crypto',), 'suites')}: [crypto] suites", error
        )
    kinds_table = table.get("kinds", {})
    if not isinstance(kinds_table, dict):
        raise error(f"{src.where(('crypto',), 'kinds')}: [crypto] kinds must be a table")
    kinds = {}
    for kind, value in kinds_table.items():
        where = f"{src.where(('crypto', 'kinds'), kind)}: [crypto.kinds] {bounds.quote(kind)}"
        own = _suites(value, where, error)
        if not own & allowed:
            raise error(f"{where} allows no suite that [crypto] suites allows")
        kinds[kind] = own
    return SuitePolicy(allowed=allowed, kinds=MappingProxyType(kinds))
