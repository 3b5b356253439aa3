"""The catalogue's lookup declarations: parsed, validated with located errors, shipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.bundles import read_bundle_dir
from broker.core.policy.bundle import compile_bundle
from broker.core.policy.source import PolicyError, parse_catalogue

BASE = """
[purposes]
seizure = "Seize"
[sections]
object = "Object"
[authorities]
border = "Border"
police = "Police"
[kinds."sis.art38"]
sections = ["object"]
purposes = ["seizure"]
retention_days = 10
review_days = 5
"""


def parse(lookup: str) -> object:
    text = BASE + '[kinds."sis.art38".lookup]\n' + lookup
    return parse_catalogue("catalogue.toml", text.encode())


def test_a_lookup_table_is_parsed() -> None:
    cat = parse(
        'selectors = ["vin", "plate"]\nrelease = "contact"\n'
        'release_by_role = { border = "action" }\naction = "Seize"\nrespond_within_hours = 48\n'
    )
    spec = cat.lookups["sis.art38"]  # type: ignore[attr-defined]
    assert spec.selectors == ("vin", "plate")
    assert spec.level_for([]) == "contact"
    assert spec.level_for(["police", "border"]) == "action"
    assert spec.respond_within_hours == 48


@pytest.mark.parametrize(
    ("lookup", "error", "line"),
    [
        ('selectors = ["passport"]\n', "names 'passport'", 1),
        ("selectors = []\n", "non-empty list", 1),
        ('selectors = ["vin"]\nrelease = "everything"\n', "use one of contact, kind, action", 2),
        ('selectors = ["vin"]\nrelease_by_role = { judge = "kind" }\n', "not in [authorities]", 2),
        ('selectors = ["vin"]\nrelease = "action"\n', "give it as action", 0),
        ('selectors = ["vin"]\nrespond_within_hours = 0\n', "whole number of hours", 2),
        ('selectors = ["vin"]\ncolour = 1\n', "unknown key 'colour'", 2),
    ],
)
def test_bad_lookup_tables_are_located(lookup: str, error: str, line: int) -> None:
    with pytest.raises(PolicyError, match=re.escape(error)) as info:
        parse(lookup)
    assert info.value.file == "catalogue.toml"
    header = BASE.count("\n") + 1  # the line of [kinds."sis.art38".lookup]
    assert info.value.line == header + line


def test_the_shipped_catalogue_declares_searchable_kinds() -> None:
    root = Path(__file__).resolve().parents[3] / "policies"
    bundle = compile_bundle(read_bundle_dir(root))
    lookups = bundle.catalogue.lookups
    assert {"interpol.red", "sis.art26", "sis.art36", "sis.art38"} <= set(lookups)
    assert "reply.lookup_hit" in bundle.kinds
    assert lookups["sis.art38"].selectors[:2] == ("vin", "plate")
