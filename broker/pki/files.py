"""The key directory's layout and its file I/O: names, modes, atomic writes, guarded reads.

Part of :mod:`broker.pki` (its docstring has the layout and the error rules)."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from broker.core.identity import (
    KEY_SIZE,
    Party,
    PartyKind,
)
from broker.errors import FailedPrecondition, InvalidArgument, NotFound

CA_DIR: Final = "ca"
CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca.key"
REVOKED: Final = "revoked.txt"
ISSUED_LOG: Final = "issued.log"
TLS_CERT: Final = "tls.pem"
TLS_KEY: Final = "tls.key"
PARTY_CA_CERT: Final = "ca.pem"
SIGNING_KEY: Final = "signing.key"
ENCRYPTION_KEY: Final = "encryption.key"
STATEMENT: Final = "statement.bin"
PQ_SIGNING_KEY: Final = "pq-signing.key"  # ML-DSA-65 seed (hybrid suite, docs/post-quantum.md)
PQ_ENCRYPTION_KEY: Final = "pq-encryption.key"  # ML-KEM-768 seed || X25519 private key
LOG_KEY: Final = "log.key"  # brokers/<id>/: transparency-log Ed25519 seed (0600)
LOG_PUB: Final = "log.pub"  # brokers/<id>/: its C2SP verifier key string (0644)
OLD_DIR: Final = "old"

KIND_DIRS: Final[dict[PartyKind, str]] = {
    "agency": "agencies",
    "admin": "admins",
    "auditor": "auditors",
    "broker": "brokers",
    "lookup": "lookups",  # lookup-key services; their OPRF key: broker/lookup_keys.py
}
BROKER_DEFAULT_DNS: Final = ("localhost",)
BROKER_DEFAULT_IPS: Final = ("127.0.0.1", "::1")

PRIVATE_MODE: Final = 0o600
PUBLIC_MODE: Final = 0o644
DIR_MODE: Final = 0o700
# Certificates and statements start this much in the past, so that a peer
# whose clock is a little behind accepts freshly issued credentials.
CLOCK_SKEW: Final = timedelta(minutes=5)


@dataclass(frozen=True)
class PartyFiles:
    """Where one party's TLS credentials are."""

    directory: Path
    cert: Path
    key: Path
    ca_cert: Path


@dataclass(frozen=True)
class AgencyFiles(PartyFiles):
    """An agency's TLS credentials plus its signing and encryption keys and statement."""

    signing_key: Path
    encryption_key: Path
    statement: Path


# --- paths -------------------------------------------------------------------


def party_directory(root: Path, party: Party) -> Path:
    """Return ``root/<kind>s/<id>``, the directory holding a party's credentials."""
    return Path(root) / KIND_DIRS[party.kind] / party.id


def _party_files(directory: Path) -> PartyFiles:
    return PartyFiles(
        directory=directory,
        cert=directory / TLS_CERT,
        key=directory / TLS_KEY,
        ca_cert=directory / PARTY_CA_CERT,
    )


def _agency_files(directory: Path) -> AgencyFiles:
    return AgencyFiles(
        directory=directory,
        cert=directory / TLS_CERT,
        key=directory / TLS_KEY,
        ca_cert=directory / PARTY_CA_CERT,
        signing_key=directory / SIGNING_KEY,
        encryption_key=directory / ENCRYPTION_KEY,
        statement=directory / STATEMENT,
    )


def _issue_hint(root: Path, party: Party) -> str:
    return f"run `broker keys issue {party.kind} {party.id} --dir {root}`"


# --- file primitives -----------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dir(directory: Path) -> None:
    """Create ``directory`` and any missing parents as 0700; make ``directory`` 0700."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=DIR_MODE)
    if not directory.is_dir():
        raise FailedPrecondition(f"{directory} exists and is not a directory")
    os.chmod(directory, DIR_MODE)


def _write_file(path: Path, data: bytes, mode: int, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically with exactly ``mode``.

    With ``exclusive``, fail with FailedPrecondition if ``path`` exists
    (checked atomically by linking rather than renaming).
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we want
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FailedPrecondition(
                    f"{path} already exists; refusing to overwrite it"
                ) from None
            tmp.unlink()
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _read_file(path: Path, what: str, hint: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{what} not found: {path} ({hint})") from None
    except IsADirectoryError:
        raise FailedPrecondition(f"{what} {path} is a directory, not a file") from None
    except PermissionError:
        raise FailedPrecondition(f"cannot read {what} {path}: permission denied") from None


def _read_private(path: Path, what: str, hint: str) -> bytes:
    """Read a private key file, refusing one that group or others may access."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{what} not found: {path} ({hint})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FailedPrecondition(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise FailedPrecondition(
            f"{what} {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it. "
            f"Run: chmod 600 {path}"
        )
    return _read_file(path, what, hint)


# --- time and validation -----------------------------------------------------------


def _utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidArgument("`now` must be a timezone-aware datetime")
    return now.astimezone(UTC)


def _to_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidArgument(f"validity must be a whole number of days >= 1, got {days!r}")


def _read_raw_key(path: Path, what: str, hint: str) -> bytes:
    data = _read_private(path, what, hint)
    if len(data) != KEY_SIZE:
        raise FailedPrecondition(f"{what} {path} must be {KEY_SIZE} raw bytes, not {len(data)}")
    return data
