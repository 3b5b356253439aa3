"""The key directory map: proofs verify for every member and for nothing else."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import keymap


def value(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@settings(max_examples=60)
@given(st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=4), max_size=40))
def test_every_member_proves_and_nothing_else_does(entries: dict[str, str]) -> None:
    values = {a: value(v + a) for a, v in entries.items()}
    root = keymap.root(values)
    proofs = keymap.proofs(values)
    assert set(proofs) == set(values)
    for agency, v in values.items():
        keymap.verify(agency, v, proofs[agency], root)
        with pytest.raises(keymap.MapProofError):
            keymap.verify(agency, value("stale " + agency), proofs[agency], root)
        for other in values:
            if other != agency:
                with pytest.raises(keymap.MapProofError):
                    keymap.verify(other, v, proofs[agency], root)
    if not values:
        assert root == keymap.EMPTY


def test_a_change_of_one_value_changes_the_root_and_stales_its_proof() -> None:
    values = {f"AG-{i}": value(str(i)) for i in range(20)}
    before = keymap.root(values)
    old = keymap.proofs(values)
    values["AG-7"] = value("rotated")
    after = keymap.root(values)
    assert before != after
    with pytest.raises(keymap.MapProofError):
        keymap.verify("AG-7", value("7"), old["AG-7"], after)  # the old entry, current root
    keymap.verify("AG-7", value("rotated"), keymap.proofs(values)["AG-7"], after)
    # The root does not depend on insertion order.
    assert keymap.root(dict(reversed(list(values.items())))) == after


def test_malformed_proofs_and_extension_lines() -> None:
    values = {"A": value("a"), "B": value("b")}
    root = keymap.root(values)
    with pytest.raises(keymap.MapProofError):
        keymap.verify("A", values["A"], [b"short"], root)
    with pytest.raises(keymap.MapProofError):
        keymap.verify("A", values["A"], [b"x" * 32] * 300, root)
    line = keymap.extension(root)
    assert keymap.root_from_extensions(["other", line]) == root
    assert keymap.root_from_extensions(["other"]) is None
    for bad in ([line, line], [f"{keymap.EXTENSION} !!"], [f"{keymap.EXTENSION} AAAA"]):
        with pytest.raises(keymap.MapProofError):
            keymap.root_from_extensions(bad)


def test_value_binds_entry_and_statement() -> None:
    assert keymap.map_value(b"e", b"s") != keymap.map_value(b"e", b"t")
    assert keymap.map_value(b"e", b"s") != keymap.map_value(b"f", b"s")


def test_root_and_proofs_are_those_of_the_first_construction() -> None:
    """Pinned: the root and every proof of 200 agencies as the first (quadratic-scan)
    construction computed them, so a faster one may not change what nodes verify."""
    values = {f"AG-{i:03d}": hashlib.sha256(str(i).encode()).digest() for i in range(200)}
    assert keymap.root(values).hex() == (
        "2f5c5b0d5ca498ed1731bbef622d88db9bca46a267fd2ec2c9a290ee86187919"
    )
    proofs = keymap.proofs(values)
    joined = b"".join(b"".join(proofs[a]) for a in sorted(proofs))
    assert hashlib.sha256(joined).hexdigest() == (
        "57af1e261a8fcd14b8cac2e6dc5e9edd9c604b470bd98717098d92dcd39d2045"
    )
