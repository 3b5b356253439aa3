"""Durable commits of a SQLite database in WAL mode, read from its wal-index.

The wal-index header (the first bytes of the ``-shm`` file, in the host's byte order) holds
``iChange``, "an unsigned integer counter, incremented with each transaction" that writes
(SQLite file format, section 4.5, https://www.sqlite.org/fileformat2.html#walindexformat);
read-only transactions leave it alone, and WAL resets after checkpoints do not reset it. With
``synchronous=FULL`` (the node's state database, broker/client/statedb.py) each such commit
is an fsync of the WAL, so the difference of two readings is the number of fsync'd commits
in between, whichever connection or statement made them. The counter wraps at 2**32.

Read it only from a process that holds no connection to the database: closing a file
descriptor drops every POSIX lock its process holds on that file, SQLite's included
(https://www.sqlite.org/howtocorrupt.html, section 2.2). The bench reads it in the harness,
never in the recipient workers whose nodes have the databases open.
"""

from __future__ import annotations

import struct
from pathlib import Path

_ICHANGE = struct.Struct("=I")  # at offset 8 of the header
_OFFSET = 8


def write_transactions(database: Path) -> int:
    """The wal-index's commit counter of `database` (0 if it has no wal-index yet).

    Raises ValueError if the wal-index is too short to hold a header.
    """
    shm = database.with_name(database.name + "-shm")
    try:
        with shm.open("rb") as f:
            header = f.read(_OFFSET + _ICHANGE.size)
    except FileNotFoundError:
        return 0
    if len(header) < _OFFSET + _ICHANGE.size:
        raise ValueError(f"{shm.name}: not a wal-index")
    return int(_ICHANGE.unpack_from(header, _OFFSET)[0])


def since(before: int, after: int) -> int:
    """Commits between two readings of the 32-bit counter."""
    return (after - before) % (1 << 32)
