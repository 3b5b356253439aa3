"""The [quotas] table of broker.toml: per-agency rate limits and quotas.

    [quotas]                          # every agency, unless overridden below
    publishes_per_second = 50         # envelopes accepted per second ...
    publish_burst = 100               # ... and saved up at most
    bytes_per_second = 8_388_608      # Publish request bytes per second ...
    bytes_burst = 16_777_216          # ... and saved up at most
    max_queued_deliveries = 100_000   # deliveries of its notices not yet delivered
    lookups_per_second = 20           # Lookup calls per second ...
    lookup_burst = 40                 # ... and saved up at most

    [quotas.agencies.agency-b]        # one agency: only the keys it changes
    publishes_per_second = 500

0 means "no limit" for every key (the default of each). A burst left out (or 0)
is twice its rate; an agency's table that sets a rate without its burst gets twice
that rate, not the default table's burst. Every problem is a ConfigError starting
with file:line:column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from broker.core import bounds
from broker.core.identity import validate_id
from broker.core.quota import Rate
from broker.errors import InvalidArgument
from broker.tomlfile import TomlText

MAX_RATE = 1_000_000_000  # per second: beyond any real broker, inside every integer type
MAX_QUEUED = 1_000_000_000


@dataclass(frozen=True)
class Quota:
    """One agency's limits (0: no limit)."""

    publishes_per_second: int = 0
    publish_burst: int = 0
    bytes_per_second: int = 0
    bytes_burst: int = 0
    max_queued_deliveries: int = 0
    lookups_per_second: int = 0
    lookup_burst: int = 0

    @property
    def publishes(self) -> Rate:
        return Rate(self.publishes_per_second, self.publish_burst or 2 * self.publishes_per_second)

    @property
    def bytes(self) -> Rate:
        return Rate(self.bytes_per_second, self.bytes_burst or 2 * self.bytes_per_second)

    @property
    def lookups(self) -> Rate:
        return Rate(self.lookups_per_second, self.lookup_burst or 2 * self.lookups_per_second)


@dataclass(frozen=True)
class Quotas:
    """The default quota and the agencies' overrides (each already merged on the default)."""

    default: Quota = field(default_factory=Quota)
    agencies: Mapping[str, Quota] = field(default_factory=dict)

    def of(self, agency: str) -> Quota:
        return self.agencies.get(agency, self.default)


KEYS = tuple(f.name for f in fields(Quota))
_PAIRS = (
    ("publishes_per_second", "publish_burst"),
    ("bytes_per_second", "bytes_burst"),
    ("lookups_per_second", "lookup_burst"),
)


def check_quotas(
    src: TomlText, values: Mapping[str, Any], error: Callable[[str], InvalidArgument]
) -> Quotas:
    """The typed [quotas] table; `error(message)` makes the loader's error type.

    Raises what `error` returns, its message starting with file:line:column of the key
    (or table) at fault and saying what to write instead.
    """

    def where(table: tuple[str, ...], key: str | None) -> str:
        if not src.lines:
            return ""
        if len(table) == 3 and src.header(table) is None:  # an inline table under [quotas]
            return f"{src.where(('quotas',), 'agencies')}: "
        return f"{src.where(table, key)}: "

    def typed(table: tuple[str, ...], raw: Mapping[str, Any], base: Quota) -> Quota:
        name = "[" + ".".join(table) + "]"
        out: dict[str, int] = {}
        for key, value in raw.items():
            if key == "agencies" and table == ("quotas",):
                continue
            if key not in KEYS:
                raise error(
                    f"{where(table, key)}unknown key {bounds.quote(key)} in {name}: use one of "
                    + ", ".join(KEYS)
                    + (" (or a [quotas.agencies.<agency>] table)" if table == ("quotas",) else "")
                )
            high = MAX_QUEUED if key == "max_queued_deliveries" else MAX_RATE
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise error(
                    f"{where(table, key)}{name} {key} must be an integer from 0 (no limit) "
                    f"to {high}, not {bounds.quote(value)}"
                )
            out[key] = value
        for rate, burst in _PAIRS:  # a new rate without its burst: twice the new rate
            if rate in out and burst not in out:
                out[burst] = 0
        quota = replace(base, **out)
        for rate, burst in _PAIRS:
            if burst in raw and 0 < getattr(quota, burst) < getattr(quota, rate):
                raise error(
                    f"{where(table, burst)}{name} {burst} must be at least {rate} "
                    f"({getattr(quota, rate)}), or 0 for twice the rate"
                )
        return quota

    default = typed(("quotas",), values, Quota())
    agencies: dict[str, Quota] = {}
    raw_agencies = values.get("agencies", {})
    if not isinstance(raw_agencies, dict):
        raise error(
            f"{where(('quotas',), 'agencies')}[quotas] agencies must be tables: write "
            "[quotas.agencies.<agency id>] and its keys on the lines below"
        )
    for agency, raw in raw_agencies.items():
        table = ("quotas", "agencies", agency)
        try:
            validate_id(agency)
        except InvalidArgument:
            raise error(
                f"{where(table, None)}{bounds.quote(agency)} is not an agency "
                "id: use 1 to 64 characters from A-Z a-z 0-9 . _ -"
            ) from None
        if not isinstance(raw, dict):
            raise error(
                f"{where(table, None)}[quotas.agencies] {agency} must be a "
                f"table: write [quotas.agencies.{agency}] and its keys on the lines below"
            )
        agencies[agency] = typed(table, raw, default)
    return Quotas(default, agencies)
