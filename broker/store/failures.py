"""What a storage failure means, in words an operator can act on.

SQLite and the operating system report a full disk, a read-only file system,
a missing permission or a database locked by another process each in their own
way (an errno, an SQLite result code). `describe` turns any of them into one
sentence that names the path and says what to do; `startup_error` wraps it in
the FailedPrecondition that `broker serve` prints before exiting non-zero.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from broker.errors import BrokerError, FailedPrecondition

_BY_ERRNO = {
    errno.ENOSPC: "the disk holding {path} is full: free some space and start again",
    errno.EDQUOT: "the disk quota for {path} is exhausted: free some space and start again",
    errno.EROFS: "{path} is on a read-only file system: mount it read-write or choose "
    "another data_dir",
    errno.EACCES: "the broker may not write to {path}: give its user write permission "
    "or choose another data_dir",
    errno.EPERM: "the broker may not write to {path}: give its user write permission "
    "or choose another data_dir",
    errno.ENOTDIR: "{path} cannot be made a directory: a file is in the way on its path; "
    "remove it or choose another data_dir",
    errno.EISDIR: "{path} is a directory where a file must be",
}
_BY_SQLITE = {
    "SQLITE_FULL": _BY_ERRNO[errno.ENOSPC],
    "SQLITE_READONLY": "the database in {path} is read-only (a read-only file system or "
    "file): make it writable or choose another data_dir",
    "SQLITE_BUSY": "the database in {path} is locked by another process (another broker, "
    "or a tool holding a write transaction): stop it and start again",
    "SQLITE_LOCKED": "the database in {path} is locked: stop whatever holds it and start again",
    "SQLITE_CANTOPEN": "the database in {path} cannot be opened: check that the directory "
    "exists and is writable",
    "SQLITE_PERM": _BY_ERRNO[errno.EACCES],
    "SQLITE_NOTADB": "{path} holds a file that is not a SQLite database: move it away or "
    "choose another data_dir",
    "SQLITE_CORRUPT": "the database in {path} is damaged: restore it from a backup",
    "SQLITE_IOERR": "the disk holding {path} reported an I/O error: check the disk",
}


def _sqlite_name(exc: sqlite3.Error) -> str:
    """SQLITE_IOERR for SQLITE_IOERR_WRITE: extended result codes share their primary's name."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    return "_".join(name.split("_")[:2])


def describe(exc: BaseException, path: Path | str) -> str | None:
    """One sentence saying what failed at `path` and what to do, or None if `exc` (or its
    cause) is not a storage failure this module knows."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error):
            text = _BY_SQLITE.get(_sqlite_name(current))
            if text is None and "readonly" in str(current):
                text = _BY_SQLITE["SQLITE_READONLY"]
            if text is not None:
                return text.format(path=path)
        elif isinstance(current, OSError) and current.errno in _BY_ERRNO:
            return _BY_ERRNO[current.errno].format(path=path)
        current = current.__cause__ or current.__context__
    return None


def startup_error(exc: BaseException, path: Path | str) -> BrokerError | None:
    """The error `broker serve` reports when storage fails while it starts, or None."""
    text = describe(exc, path)
    return None if text is None else FailedPrecondition(f"cannot start: {text}")
