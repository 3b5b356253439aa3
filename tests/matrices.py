"""The matrices of docs/reliability.md are written by the tests that check them.

Each matrix lives in the document between two markers. A test computes its
rows from real runs and calls `sync`: normally it fails when the committed text
differs from what the run produced; with BROKER_WRITE_MATRICES=1 (`make
matrices`) it writes the new text instead. So the document cannot drift from
what the broker does.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
WRITE_ENV = "BROKER_WRITE_MATRICES"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{12,}\b")  # digests


def normalise(text: str, *paths: Path | str) -> str:
    """What varies from run to run, replaced: temporary paths, UUIDs, digests."""
    for p in sorted((str(p) for p in paths), key=len, reverse=True):
        text = text.replace(p + "/", "").replace(p, "<dir>")
    text = _UUID.sub("<uuid>", text)
    return _HEX.sub("<hex>", text)


def cell(text: str) -> str:
    """One table cell: on one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(text: str) -> str:
    """A cell in code font (backticks inside become quotes)."""
    return "`" + cell(text).replace("`", "'") + "`" if text else ""


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN GENERATED {name}: written by the tests (make matrices); do not edit -->",
        f"<!-- END GENERATED {name} -->",
    )


def sync(name: str, text: str) -> None:
    """Check (or, with BROKER_WRITE_MATRICES=1, write) the generated section `name`."""
    begin, end = _markers(name)
    doc = DOC.read_text(encoding="utf-8")
    start, stop = doc.find(begin), doc.find(end)
    assert start >= 0 and stop > start, f"{DOC} lacks the markers of section {name!r}"
    current = doc[start + len(begin) : stop].strip("\n")
    wanted = text.strip("\n")
    if current == wanted:
        return
    if os.environ.get(WRITE_ENV) == "1":
        DOC.write_text(doc[: start + len(begin)] + "\n" + wanted + "\n" + doc[stop:], "utf-8")
        return
    diff = "\n".join(
        difflib.unified_diff(
            current.splitlines(), wanted.splitlines(), "committed", "this run", lineterm=""
        )
    )
    raise AssertionError(
        f"docs/reliability.md section {name!r} differs from what the tests found; "
        f"run `make matrices` and review the change:\n{diff}"
    )
