"""Side-by-side differences of two policy bundles, file by file (pure)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

SAME, CHANGED, ADDED, REMOVED = "same", "chg", "add", "del"


@dataclass(frozen=True)
class Row:
    left_no: int | None
    left: str
    right_no: int | None
    right: str
    tag: str  # SAME, CHANGED, ADDED (right only) or REMOVED (left only)


@dataclass(frozen=True)
class FileDiff:
    path: str
    status: str  # same | changed | added | removed
    rows: tuple[Row, ...]

    @property
    def changes(self) -> int:
        return sum(1 for r in self.rows if r.tag != SAME)


def _lines(data: bytes | None) -> list[str]:
    if data is None:
        return []
    return data.decode("utf-8", errors="replace").splitlines()


def side_by_side(left: list[str], right: list[str]) -> tuple[Row, ...]:
    rows: list[Row] = []
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            rows += [
                Row(i + 1, left[i], j + 1, right[j], SAME)
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            ]
            continue
        n = max(i2 - i1, j2 - j1)
        for k in range(n):
            i, j = i1 + k, j1 + k
            has_l, has_r = i < i2, j < j2
            tag = CHANGED if has_l and has_r else (REMOVED if has_l else ADDED)
            rows.append(
                Row(
                    i + 1 if has_l else None,
                    left[i] if has_l else "",
                    j + 1 if has_r else None,
                    right[j] if has_r else "",
                    tag,
                )
            )
    return tuple(rows)


def bundle_diff(left: Mapping[str, bytes], right: Mapping[str, bytes]) -> tuple[FileDiff, ...]:
    """Every file of either bundle, in path order, with its side-by-side rows."""
    out = []
    for path in sorted(set(left) | set(right)):
        a, b = left.get(path), right.get(path)
        status = (
            "added" if a is None else "removed" if b is None else "same" if a == b else "changed"
        )
        out.append(FileDiff(path, status, side_by_side(_lines(a), _lines(b))))
    return tuple(out)
