"""Start-up checks of the broker process that gRPC and SQLite do not say clearly.

:func:`check_listen_address` binds the listen address once, as gRPC will, and says
in one line why it cannot (a port in use, an address not of this machine);
``_lock_data_dir`` holds an exclusive lock on the SQLite data directory for the
process's life. Both raise FailedPrecondition saying what to fix. Used by
BrokerApp (broker/server/app.py).
"""

from __future__ import annotations

import errno
import fcntl
import socket
from pathlib import Path
from typing import IO

from broker.errors import FailedPrecondition
from broker.store import failures


def check_listen_address(listen: str) -> None:
    """Raise FailedPrecondition if `listen` (host:port) cannot be bound now: a port in use
    or an address that is not this machine's, said in one line (gRPC itself reports only
    "failed to bind", after printing its own log line)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - what an empty host means to gRPC
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(
            f"cannot listen on {listen}: {getattr(exc, 'strerror', None) or exc}; "
            "use host:port with a local address"
        ) from None
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: SO_REUSEADDR, so connections left in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                hint = (
                    "another process is listening there: stop it or choose another port"
                    if exc.errno == errno.EADDRINUSE
                    else "choose an address of this machine"
                )
                raise FailedPrecondition(
                    f"cannot listen on {listen}: {exc.strerror}; {hint}"
                ) from None


def _lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on the data directory for the process's life: two brokers
    on one SQLite file would each believe they own the delivery state."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = (data_dir / "broker.lock").open("wb")
    except OSError as exc:
        raise failures.startup_error(exc, data_dir) or FailedPrecondition(
            f"cannot start: cannot use data_dir {data_dir}: {exc.strerror or exc}"
        ) from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise FailedPrecondition(
            f"another broker is running on {data_dir}; stop it or use another data_dir"
        ) from exc
    return handle
