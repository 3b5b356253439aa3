"""broker.toml [crypto], the suite policy it builds, and the node's choice of suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.client.suite_choice import choose_suite
from broker.config import ConfigError, load_config
from broker.core.envelope import SUITE, SUITE_HYBRID
from broker.core.identity import AgencyKeys
from broker.core.suites import SuitePolicy
from broker.errors import FailedPrecondition, InvalidArgument


def _load(tmp_path: Path, text: str) -> SuitePolicy:
    path = tmp_path / "broker.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).crypto


def test_default_allows_both(tmp_path: Path) -> None:
    policy = _load(tmp_path, "[server]\n")
    assert policy.allowed == {SUITE, SUITE_HYBRID}
    policy.check(SUITE, "interpol.red")
    policy.check(SUITE_HYBRID, "interpol.red")


def test_deployment_and_kind_lists(tmp_path: Path) -> None:
    policy = _load(
        tmp_path,
        '[crypto]\nsuites = ["classical", "hybrid"]\n\n'
        '[crypto.kinds]\n"interpol.red" = ["hybrid"]\n',
    )
    assert policy.allowed_for("interpol.red") == {SUITE_HYBRID}
    assert policy.allowed_for("sis.discreet_check") == {SUITE, SUITE_HYBRID}
    with pytest.raises(
        FailedPrecondition, match=r"not allowed for notices of kind 'interpol\.red'"
    ):
        policy.check(SUITE, "interpol.red")
    policy.check(SUITE, "sis.discreet_check")

    only = _load(tmp_path, '[crypto]\nsuites = ["hybrid"]\n')
    with pytest.raises(
        FailedPrecondition, match="not allowed for this deployment; seal with hybrid"
    ):
        only.check(SUITE, "anything")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[crypto]\nsuites = ["rsa"]\n',
            r"broker.toml:2:\d+: \[crypto\] suites: unknown suite 'rsa'",
        ),
        ("[crypto]\nsuites = []\n", "must be a non-empty list"),
        ("[crypto]\nsuites = [1]\n", "as strings"),
        ('[crypto]\nsuite = ["hybrid"]\n', "unknown key 'suite' in \\[crypto\\]"),
        ("[crypto]\nkinds = 3\n", "kinds must be a table"),
        (
            '[crypto]\nsuites = ["classical"]\n[crypto.kinds]\n"interpol.red" = ["hybrid"]\n',
            "allows no suite that \\[crypto\\] suites allows",
        ),
    ],
)
def test_bad_crypto_tables(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def _keys(agency: str, pq: bool) -> AgencyKeys:
    return AgencyKeys(
        agency,
        bytes(32),
        bytes(32),
        serial=3,
        not_before_ms=0,
        not_after_ms=1,
        pq_signing_key=b"s" if pq else b"",
        pq_encryption_key=b"e" if pq else b"",
    )


def test_choose_suite() -> None:
    both = {"DE-BKA": _keys("DE-BKA", True), "IT-BORDER": _keys("IT-BORDER", False)}
    pq_only = {"DE-BKA": _keys("DE-BKA", True)}
    assert choose_suite("classical", "FR-NCB", True, both) == SUITE
    assert choose_suite("hybrid", "FR-NCB", True, pq_only) == SUITE_HYBRID
    assert choose_suite(SUITE_HYBRID, "FR-NCB", True, pq_only) == SUITE_HYBRID
    assert choose_suite("auto", "FR-NCB", True, pq_only) == SUITE_HYBRID
    assert choose_suite("auto", "FR-NCB", True, both) == SUITE
    assert choose_suite("auto", "FR-NCB", False, pq_only) == SUITE
    with pytest.raises(FailedPrecondition, match=r"IT-BORDER \(statement serial 3\)"):
        choose_suite("hybrid", "FR-NCB", True, both)
    with pytest.raises(FailedPrecondition, match="FR-NCB has no post-quantum keys"):
        choose_suite("hybrid", "FR-NCB", False, pq_only)
    with pytest.raises(InvalidArgument, match="suite 'rsa' is unknown"):
        choose_suite("rsa", "FR-NCB", True, pq_only)
