"""The catalogue's per-kind `suites` (broker/core/policy/kindsuites.py): parsed, validated
with file:line:column errors, and intersected with broker.toml's [crypto]."""

from __future__ import annotations

import re
from types import MappingProxyType

import pytest

from broker.core.envelope import SUITE, SUITE_HYBRID
from broker.core.policy.source import PolicyError, parse_catalogue
from broker.core.suites import SuitePolicy
from broker.errors import FailedPrecondition

BASE = """[purposes]
seizure = "Seize"
[sections]
object = "Object"
[authorities]
police = "Police"
[kinds."sis.art38"]
sections = ["object"]
purposes = ["seizure"]
retention_days = 10
review_days = 5
"""
SUITES_LINE = BASE.count("\n") + 1  # the line the suites key is written on


def kind(suites: str) -> object:
    cat = parse_catalogue("catalogue.toml", (BASE + f"suites = {suites}\n").encode())
    return cat.kinds["sis.art38"]


def test_suites_are_parsed_by_short_name_or_id() -> None:
    assert kind('["hybrid"]').suites == (SUITE_HYBRID,)  # type: ignore[attr-defined]
    both = kind(f'["{SUITE}", "hybrid"]').suites  # type: ignore[attr-defined]
    assert both == tuple(sorted((SUITE, SUITE_HYBRID)))
    without = parse_catalogue("catalogue.toml", BASE.encode()).kinds["sis.art38"]
    assert without.suites == ()  # no key: any suite the deployment allows


@pytest.mark.parametrize(
    ("suites", "error", "column"),
    [
        ('"hybrid"', "must be a non-empty list of suite names", 1),
        ("[]", "must be a non-empty list of suite names", 1),
        ('["hybrid", 3]', "must list suite names as strings", 1),
        ('["quantum"]', 'names unknown suite \'quantum\'; use "classical", "hybrid"', 11),
        ('["hybrid", "hybrid"]', "lists 'hybrid' twice", 11),
    ],
)
def test_bad_suites_are_located(suites: str, error: str, column: int) -> None:
    with pytest.raises(PolicyError, match=re.escape(error)) as info:
        kind(suites)
    assert (info.value.file, info.value.line) == ("catalogue.toml", SUITES_LINE)
    assert info.value.column == column
    assert str(info.value).startswith(f"catalogue.toml:{SUITES_LINE}:{column}: kinds.sis.art38")


def test_the_policy_narrows_broker_toml_and_the_message_names_kind_and_suites() -> None:
    deployment = SuitePolicy()
    with pytest.raises(FailedPrecondition) as info:
        deployment.check(SUITE, "interpol.red", (SUITE_HYBRID,))
    assert str(info.value) == (
        "suite 'classical' is not allowed for notices of kind 'interpol.red'; seal with hybrid"
    )
    deployment.check(SUITE_HYBRID, "interpol.red", (SUITE_HYBRID,))
    deployment.check(SUITE, "interpol.red")  # the policy says nothing: both allowed
    classical_only = SuitePolicy(allowed=frozenset({SUITE}))
    with pytest.raises(FailedPrecondition, match="seal with no suite"):
        classical_only.check(SUITE_HYBRID, "interpol.red", (SUITE_HYBRID,))
    narrowed = SuitePolicy(kinds=MappingProxyType({"interpol.red": frozenset({SUITE})}))
    assert narrowed.allowed_for("interpol.red", (SUITE, SUITE_HYBRID)) == {SUITE}
