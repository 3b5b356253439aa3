"""Reading the operator's TOML files (broker.toml, registry.toml) with errors that point
at the line and column to fix.

`read` returns the parsed document and a `TomlText` that finds where a table or a
key sits, so a loader that refuses a value can say `file:line:column: ...`.
Syntax errors carry tomllib's own position; a document nested too deeply (which
makes tomllib recurse without bound) is refused as such.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from broker.errors import BrokerError

_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_HEADER = re.compile(r"^\s*\[")


class TomlText:
    """One file's lines, with helpers that find a table header or a key."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.lines = text.splitlines()

    def header(self, table: Sequence[str]) -> int | None:
        """0-based line of the header [a."b"] for ("a", "b"), or None."""
        parts = [
            r"\s*(?:\"" + re.escape(n) + r"\"|'" + re.escape(n) + r"'|" + re.escape(n) + r")\s*"
            for n in table
        ]
        pattern = re.compile(r"^\s*\[" + r"\.".join(parts) + r"\]")
        for i, line in enumerate(self.lines):
            if pattern.match(line):
                return i
        return None

    def at(self, table: Sequence[str], key: str | None = None) -> tuple[int, int]:
        """1-based (line, column) of `key` in the table `table` (() for the top level);
        else of the table's header; else of a table named `key`; else 1:1."""
        start = 0
        if table:
            header = self.header(table)
            if header is None:
                return (1, 1)
            if key is None:
                return (header + 1, 1)
            start = header + 1
        if key is not None:
            e = re.escape(key)
            key_re = re.compile(r"^(\s*)(?:\"" + e + r"\"|'" + e + r"'|" + e + r")\s*[=.]")
            for i in range(start, len(self.lines)):
                if _HEADER.match(self.lines[i]):
                    break
                m = key_re.match(self.lines[i])
                if m:
                    return (i + 1, len(m.group(1)) + 1)
        if table:
            return (start, 1)
        header = self.header((key,)) if key is not None else None
        return (header + 1, 1) if header is not None else (1, 1)

    def where(self, table: Sequence[str], key: str | None = None) -> str:
        line, col = self.at(table, key)
        return f"{self.name}:{line}:{col}"


def read(path: Path, error: type[BrokerError], what: str) -> tuple[dict[str, Any], TomlText]:
    """Read and parse the TOML file `path` (`what` names it in messages: "config file").

    Raises `error` with file:line:column for a file that is missing, unreadable, not
    UTF-8, not TOML or nested too deeply.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory; name the file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}:1:1: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_AT.search(msg)
        if m is not None:
            raise error(f"{path}:{m[1]}:{m[2]}: invalid TOML: {msg[: m.start()]}") from None
        end = msg.removesuffix(" (at end of document)")
        line = max(1, len(text.splitlines()))
        raise error(f"{path}:{line}:1: invalid TOML: {end}") from None
    except RecursionError:
        raise error(f"{path}:1:1: values are nested too deeply") from None
    return doc, TomlText(str(path), text)
