"""A policy file's text (pure): TOML parsed, every error placed at file:line:column.

:func:`parse_toml` decodes UTF-8 and parses; TOML's own errors keep their line
and column. :class:`SourceText` finds a table header, the n-th [[rule]] or a key
(or a quoted value inside it) by scanning the lines, which is how a semantic
error is placed; the value checks (``_strings``, ``_positive_int``, ``_text``)
raise through it. Part of :mod:`broker.core.policy.source`.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from typing import Any

from broker.errors import InvalidArgument

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class PolicyError(InvalidArgument):
    """The bundle is malformed, or a notice does not fit the catalogue.

    For bundle errors `file`, `line` and `column` (1-based) say where; str()
    starts with "file:line:column: ".
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        if file and line:
            where = f"{file}:{line}:{column or 1}: "
        elif file:
            where = f"{file}: "
        else:
            where = ""
        super().__init__(where + message)


# -- locating keys in TOML text -----------------------------------------------------------


class SourceText:
    """One TOML file's text, with helpers that find where a table, rule or key sits."""

    _HEADER = re.compile(r"^\[")
    _RULE = re.compile(r"^\s*\[\[\s*rule\s*\]\]")

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def error(self, message: str, at: tuple[int, int] | None = None) -> PolicyError:
        line, col = at or (1, 1)
        return PolicyError(message, file=self.path, line=line, column=col)

    _SUBTABLE = re.compile(r"^\[\[?\s*rule\s*\.")

    def _span_end(self, start: int) -> int:
        """Where the table starting at `start` ends (a rule's span takes in [rule.*] tables)."""
        in_rule = self._RULE.match(self.lines[start]) is not None
        for i in range(start + 1, len(self.lines)):
            line = self.lines[i]
            if self._HEADER.match(line) and not (in_rule and self._SUBTABLE.match(line)):
                return i
        return len(self.lines)

    def key_after(
        self, start: int | None, anchor: str, key: str, needle: str | None = None
    ) -> tuple[int, int]:
        """(line, column) of `needle` (else `key`) at or after the `anchor` key of a table."""
        if start is None:
            return self.key(start, key, needle)
        end = self._span_end(start)
        anchor_re = re.compile(r"^(\s*)(\[\[?\s*rule\s*\.\s*)?" + re.escape(anchor) + r"\b")
        for i in range(start + 1, end):
            if not anchor_re.match(self.lines[i]):
                continue
            for j in range(i, end):
                col = _find_quoted(self.lines[j], needle) if needle is not None else None
                if col is None:
                    m = re.search(r"\b" + re.escape(key) + r"\s*=", self.lines[j])
                    col = m.start() if m and needle is None else None
                if col is not None:
                    return (j + 1, col + 1)
            return (i + 1, 1)
        return self.key(start, key, needle)

    def table(self, *names: str) -> int | None:
        """0-based line of the header [a."b".c] for names ("a", "b", "c"), or None."""
        parts = []
        for name in names:
            e = re.escape(name)
            parts.append(r"\s*(?:\"" + e + r"\"|'" + e + r"'|" + e + r")\s*")
        pattern = re.compile(r"^\[" + r"\.".join(parts) + r"\]")
        for i, line in enumerate(self.lines):
            if pattern.match(line):
                return i
        return None

    def rule(self, index: int) -> int | None:
        """0-based line of the index-th [[rule]] header, or None."""
        seen = -1
        for i, line in enumerate(self.lines):
            if self._RULE.match(line):
                seen += 1
                if seen == index:
                    return i
        return None

    def key(
        self, start: int | None, key: str | None = None, needle: str | None = None
    ) -> tuple[int, int]:
        """(line, column), 1-based, of `needle` in the value of `key` in the table at `start`.

        Falls back to the key, then to the table header, then to the file's start.
        """
        if start is None:
            if needle is not None:
                return self.anywhere(needle) or (1, 1)
            return (1, 1)
        end = self._span_end(start)
        if key is None:
            return (start + 1, 1)
        key_re = re.compile(r"^(\s*)(\"?" + re.escape(key) + r"\"?)\s*[=.]")
        for i in range(start + 1, end):
            m = key_re.match(self.lines[i])
            if m is None:
                continue
            if needle is not None:
                for j in range(i, end):
                    if j > i and re.match(r"^\s*[A-Za-z_\"'][\w\"'.-]*\s*=", self.lines[j]):
                        break
                    col = _find_quoted(self.lines[j], needle)
                    if col is not None:
                        return (j + 1, col + 1)
            return (i + 1, len(m.group(1)) + 1)
        return (start + 1, 1)

    def anywhere(self, needle: str) -> tuple[int, int] | None:
        for i, line in enumerate(self.lines):
            col = _find_quoted(line, needle)
            if col is not None:
                return (i + 1, col + 1)
        return None


def _find_quoted(line: str, needle: str) -> int | None:
    for mark in ('"', "'"):
        col = line.find(mark + needle + mark)
        if col >= 0:
            return col
    col = line.find(needle)
    return col if col >= 0 else None


def parse_toml(path: str, data: bytes) -> tuple[dict[str, Any], SourceText]:
    """Parse one file; raise PolicyError with file:line:column on bad TOML."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 text ({exc.reason})", file=path, line=1, column=1) from exc
    src = SourceText(path, text)
    try:
        return tomllib.loads(text), src
    except RecursionError:
        # tomllib recurses once per nesting level: a hostile file must not crash the caller.
        raise PolicyError(
            "invalid TOML: arrays or inline tables are nested too deeply", file=path, line=1
        ) from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            raise PolicyError(
                f"invalid TOML: {msg[: m.start()]}", file=path, line=int(m[1]), column=int(m[2])
            ) from exc
        m = re.search(r"\s*\(at end of document\)$", msg)
        if m:
            raise PolicyError(
                f"invalid TOML: {msg[: m.start()]} at the end of the file",
                file=path,
                line=max(1, len(src.lines)),
                column=1,
            ) from exc
        raise PolicyError(f"invalid TOML: {msg}", file=path, line=1, column=1) from exc


# -- validation helpers -------------------------------------------------------------------


def _strings(
    src: SourceText, at: tuple[int, int], where: str, value: Any, *, allow_empty: bool = False
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise src.error(f"{where} must be a list of non-empty strings", at)
    if not value and not allow_empty:
        raise src.error(
            f"{where} is an empty list, which would match nobody; "
            "remove the key to mean 'any', or name at least one entry",
            at,
        )
    dupes = sorted(v for v, n in Counter(value).items() if n > 1)  # linear: lists may be long
    if dupes:
        raise src.error(f"{where} lists {', '.join(dupes)} twice", at)
    return tuple(value)


def _positive_int(src: SourceText, at: tuple[int, int], where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise src.error(f"{where} must be a positive integer", at)
    return value


def _text(src: SourceText, at: tuple[int, int], where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise src.error(f"{where} must be a non-empty string", at)
    return value
