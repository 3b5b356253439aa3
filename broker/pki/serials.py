"""Key statements as stored and the issuance log: serials only ever go up.

Part of :mod:`broker.pki` (its docstring has the layout and the error rules)."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path

from cryptography import x509
from google.protobuf.message import DecodeError

from broker.core.identity import (
    Party,
)
from broker.errors import FailedPrecondition
from broker.pki.files import (
    CA_DIR,
    ISSUED_LOG,
    OLD_DIR,
    PUBLIC_MODE,
    STATEMENT,
    _read_file,
)
from broker.v1 import notice_pb2


def read_statement(path: Path) -> notice_pb2.SignedKeyStatement:
    """Read one ``statement.bin``, unverified; raise NotFound or FailedPrecondition."""
    path = Path(path)
    data = _read_file(path, "key statement", "run `broker keys rotate agency <id>`")
    try:
        signed = notice_pb2.SignedKeyStatement.FromString(data)
    except DecodeError:
        raise FailedPrecondition(f"{path} is not a SignedKeyStatement") from None
    if not signed.statement or not signed.signature:
        raise FailedPrecondition(f"{path} is not a SignedKeyStatement")
    return signed


def unverified_statement_serial(signed: notice_pb2.SignedKeyStatement) -> int:
    """Return the serial a statement claims, WITHOUT verifying it.

    Only for numbering the next statement and for display; anything that
    trusts a statement must use :func:`verify_key_statement`.
    Raises FailedPrecondition if the bytes are not a KeyStatement.
    """
    try:
        return notice_pb2.KeyStatement.FromString(signed.statement).serial
    except DecodeError:
        raise FailedPrecondition("signed key statement bytes are not a KeyStatement") from None


def _statement_serial(path: Path) -> int:
    """Serial of the statement in ``path``, 0 if there is none (unverified)."""
    if not path.exists():
        return 0
    try:
        return unverified_statement_serial(read_statement(path))
    except FailedPrecondition as exc:
        raise FailedPrecondition(f"{path}: {exc}") from None


def _append_issued(
    root: Path, t: datetime, party: Party, cert: x509.Certificate, serial: int
) -> None:
    """Append one line to ``ca/issued.log``: time, URI, certificate serial, statement serial."""
    line = f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')} {party.uri()} cert={cert.serial_number:x}"
    if serial:
        line += f" statement={serial}"
    path = Path(root) / CA_DIR / ISSUED_LOG
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, PUBLIC_MODE)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _logged_serial(root: Path, party: Party) -> int:
    """Highest statement serial ``ca/issued.log`` records for ``party`` (0 if none)."""
    try:
        text = (Path(root) / CA_DIR / ISSUED_LOG).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return 0
    serial = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == party.uri() and fields[3].startswith("statement="):
            with contextlib.suppress(ValueError):
                serial = max(serial, int(fields[3].removeprefix("statement=")))
    return serial


def _previous_serial(root: Path, party: Party, directory: Path) -> int:
    """Highest statement serial ever issued for this agency.

    The maximum over the CA's issuance log and the agency directory (current
    and archived statements), so a lost file never makes a serial repeat.
    """
    serial = max(_logged_serial(root, party), _statement_serial(directory / STATEMENT))
    old = directory / OLD_DIR
    if old.is_dir():
        for path in old.glob(f"*/{STATEMENT}"):
            serial = max(serial, _statement_serial(path))
    return serial
