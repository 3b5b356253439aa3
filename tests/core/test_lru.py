"""The bounded LRU mapping behind the decision and expectation caches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.lru import Lru


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    cache.put("a", 4)  # replacing refreshes too
    cache.put("d", 5)
    assert (cache.get("a"), cache.get("c"), cache.get("d"), len(cache)) == (4, None, 5, 2)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Lru(0)


@settings(max_examples=200)
@given(st.integers(1, 5), st.lists(st.tuples(st.booleans(), st.integers(0, 8)), max_size=60))
def test_it_holds_what_a_model_holds(limit: int, ops: list[tuple[bool, int]]) -> None:
    cache: Lru[int, int] = Lru(limit)
    model: list[tuple[int, int]] = []  # oldest first
    for n, (is_put, key) in enumerate(ops):
        found = [kv for kv in model if kv[0] == key]
        if is_put:
            model = [kv for kv in model if kv[0] != key] + [(key, n)]
            model = model[-limit:]
            cache.put(key, n)
        else:
            assert cache.get(key) == (found[0][1] if found else None)
            if found:
                model = [kv for kv in model if kv[0] != key] + found
        assert len(cache) == len(model) <= limit
