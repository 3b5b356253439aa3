"""Every fuzz target, under hypothesis: arbitrary bytes and mutated valid inputs raise only
the project's error family. And the regressions: every input a fuzzer once found
(tests/fuzz/regressions/<target>/) stays harmless."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import targets

REGRESSIONS = Path(__file__).resolve().parent / "regressions"


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few bytes overwritten, cut, or extended."""

    def apply(seed: bytes, edits: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
        data = bytearray(seed)
        for pos, value in edits:
            if data:
                data[pos % len(data)] = value
        if cut and data:
            del data[cut % len(data) :]
        return bytes(data) + tail

    return st.builds(
        apply,
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=4),
        st.integers(0, 1 << 20),
        st.binary(max_size=8),
    )


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_seeds_pass_their_target(name: str) -> None:
    seeds = targets.TARGETS[name].seeds()
    assert seeds
    for seed in seeds:
        targets.run(name, seed)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_target_raises_only_broker_errors(name: str) -> None:
    seeds = targets.TARGETS[name].seeds()

    @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(st.binary(max_size=256), mutated(seeds)))
    def property_(data: bytes) -> None:
        targets.run(name, data)

    property_()


def _regressions() -> list[tuple[str, Path]]:
    return sorted(
        (p.parent.name, p) for p in REGRESSIONS.glob("*/*") if p.is_file() and p.name != "README.md"
    )


@pytest.mark.parametrize(("name", "path"), _regressions(), ids=lambda v: str(v)[-40:])
def test_regression(name: str, path: Path) -> None:
    targets.run(name, path.read_bytes())


def test_regressions_name_real_targets() -> None:
    for folder in REGRESSIONS.iterdir():
        if folder.is_dir():
            assert folder.name in targets.TARGETS, folder
