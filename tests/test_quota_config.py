"""The [quotas] table of broker.toml: defaults, per-agency overrides, file:line:column errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import ConfigError, load_config
from broker.quotas import Quota


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "broker.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_defaults_and_overrides_merge(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "[quotas]\npublishes_per_second = 50\nmax_queued_deliveries = 1000\n\n"
        "[quotas.agencies.DE-BKA]\npublishes_per_second = 500\npublish_burst = 800\n",
    )
    quotas = config.quotas  # type: ignore[attr-defined]
    assert quotas.of("FR-NCB") == Quota(publishes_per_second=50, max_queued_deliveries=1000)
    bka = quotas.of("DE-BKA")
    assert (bka.publishes_per_second, bka.publish_burst, bka.max_queued_deliveries) == (
        500,
        800,
        1000,
    )
    assert quotas.of("FR-NCB").publishes.burst == 100  # no burst: twice the rate


def test_no_table_means_no_limits(tmp_path: Path) -> None:
    quota = load(tmp_path, "[server]\n").quotas.of("X")  # type: ignore[attr-defined]
    assert not (quota.publishes.limited or quota.bytes.limited or quota.lookups.limited)
    assert quota.max_queued_deliveries == 0


@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        ("[quotas]\npublishes_per_second = -1\n", "2:1", "integer from 0 (no limit)"),
        ('[quotas]\n\npublish_burst = "x"\n', "3:1", "not 'x'"),
        ("[quotas]\nlookups_per_second = 1.5\n", "2:1", "not 1.5"),
        ("[quotas]\nbytes_per_second = true\n", "2:1", "not True"),
        ("[quotas]\nbytes_per_second = 10000000000\n", "2:1", "to 1000000000"),
        ("[quotas]\npublishes = 5\n", "2:1", "unknown key 'publishes' in [quotas]"),
        ("[quotas]\npublishes_per_second = 10\npublish_burst = 5\n", "3:1", "at least"),
        ("[quotas.agencies.DE-BKA]\nspeed = 1\n", "2:1", "[quotas.agencies.DE-BKA]"),
        (
            "[quotas.agencies.DE-BKA]\n  max_queued_deliveries = -5\n",
            "2:3",
            "max_queued_deliveries must be",
        ),
        ('[quotas.agencies."a b"]\nlookup_burst = 1\n', "1:1", "not an agency id"),
        ("[quotas]\nagencies = 3\n", "2:1", "must be tables"),
        ("[quotas]\nagencies = { X = 3 }\n", "2:1", "must be a table"),
        ("quotas = 4\n", "1:1", "quotas must be a table"),
    ],
)
def test_bad_values_name_file_line_and_column(
    tmp_path: Path, text: str, where: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'broker.toml'}:{where}: "), message
    assert needle in message, message


def test_an_agency_rate_without_its_burst_gets_twice_the_new_rate(tmp_path: Path) -> None:
    quotas = load(
        tmp_path,
        "[quotas]\npublishes_per_second = 100\npublish_burst = 200\nlookup_burst = 40\n"
        "lookups_per_second = 20\n\n[quotas.agencies.DE-BKA]\npublishes_per_second = 500\n",
    ).quotas  # type: ignore[attr-defined]
    assert quotas.of("DE-BKA").publishes.burst == 1000  # not the default table's 200
    assert quotas.of("DE-BKA").lookups.burst == 40  # inherited with its rate
    assert quotas.of("FR-NCB").publishes.burst == 200


def test_the_documented_example_loads(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    example = text.split("## Fair sharing", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    quotas = load(tmp_path, example).quotas  # type: ignore[attr-defined]
    assert quotas.of("DE-BKA").publishes_per_second == 500
    assert quotas.of("X").max_queued_deliveries == 100_000
