"""`broker serve`: run the broker until SIGTERM or SIGINT, then shut down gracefully.

A broker that cannot start (a port in use, a data directory it cannot write, a
full disk, a locked database, a bad configuration) prints one line saying what
to fix and exits non-zero (broker/cli/main.py); it never starts half-way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.config import ServerConfig, load_config
from broker.logs import setup_logging

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

log = logging.getLogger("broker.server")
STORE_FILE = "broker.sqlite3"  # ServerConfig.database


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="run the broker (SQLite store under data_dir, or PostgreSQL with --store)"
    )
    p.add_argument("--config", type=Path, help="broker.toml (default: built-in defaults)")
    p.add_argument("--listen", help="host:port to listen on (overrides the config)")
    p.add_argument("--data-dir", type=Path, help="where the SQLite store lives")
    p.add_argument(
        "--store",
        help="postgresql://user@host:port/db URL of a store shared by several replicas "
        "(overrides the config; default: the SQLite file under data_dir)",
    )
    p.add_argument("--keys-dir", type=Path, help="deployment keys (see keys/README.md)")
    p.add_argument("--policy-dir", type=Path, help="policy bundle directory")
    p.add_argument("--registry", type=Path, help="agency registry (registry.toml)")
    p.add_argument("--metrics-listen", help="host:port for Prometheus metrics; '' disables")
    p.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    p.add_argument(
        "--init",
        action="store_true",
        help="start a new, empty store in a data directory that holds other files but no store",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(
        args.config,
        listen=args.listen,
        data_dir=args.data_dir,
        store=args.store,
        keys_dir=args.keys_dir,
        policy_dir=args.policy_dir,
        registry=args.registry,
        metrics_listen=args.metrics_listen,
    )
    if not config.store:  # SQLite: the store is a file under data_dir
        defaults = args.config is None and args.data_dir is None
        check_data_dir(config.data_dir, init=args.init, defaults=defaults)
    setup_logging(config.log_level, config.log_format)
    return asyncio.run(serve(config, args.port_file))


def check_data_dir(data_dir: Path, *, init: bool, defaults: bool = False) -> None:
    """Refuse a data directory that holds files but no broker store, unless `init`: it is
    most likely the parent of the real one (`data` for `data/broker`), and starting there
    would begin a new, empty deployment beside the real one. With the built-in defaults
    (`defaults`: no --config, no --data-dir) a missing one is refused too: `broker serve`
    run from another directory would start a new deployment there. Otherwise a missing
    or empty directory is a new deployment (a broker.toml or --data-dir names it).
    Raises FailedPrecondition naming the directory and what it should hold (and the
    subdirectory that does hold a store, if one does)."""
    from broker.errors import FailedPrecondition

    store = data_dir / STORE_FILE
    if init or store.exists():
        return
    if defaults and not data_dir.exists():
        raise FailedPrecondition(
            f"no deployment here: the default data directory {data_dir} (under "
            f"{Path.cwd()}) does not exist. Run from the deployment's directory, give "
            "--config broker.toml or --data-dir DIR, or --init to start a new, empty "
            "deployment here"
        )
    if not data_dir.is_dir():
        return
    try:
        entries = sorted(p.name for p in data_dir.iterdir())
    except OSError:
        return  # unreadable: the store's own open names the problem
    if not entries:
        return
    nested = sorted(p.parent for p in data_dir.glob(f"*/{STORE_FILE}"))
    hint = f"; did you mean --data-dir {nested[0]}?" if nested else "."
    raise FailedPrecondition(
        f"data directory {data_dir} holds no broker store (expected {store}) but holds "
        f"{', '.join(entries[:5])}{' ...' if len(entries) > 5 else ''}{hint} Give --init to "
        "start a new, empty deployment there"
    )


async def serve(config: ServerConfig, port_file: Path | None = None) -> int:
    from broker.server.app import BrokerApp
    from broker.server.opsport import OpsPort

    ops = None
    if config.metrics_listen:
        # Bind the operator's port first: a port in use is a clear error, not a
        # half-started broker. /readyz says "starting" until the broker serves.
        ops = await OpsPort.bind(config.metrics_listen)
        log.info("metrics serving", extra={"listen": config.metrics_listen, "port": ops.port})
    try:
        app = BrokerApp(config)
        try:
            port = await app.start()
        except BaseException:
            await app.stop(grace=0)  # close the store and release the data directory first
            raise
        if ops is not None:
            ops.attach(app)
        return await _serve_until_stopped(app, port, port_file)
    finally:
        if ops is not None:
            await ops.close()


async def _serve_until_stopped(app: BrokerApp, port: int, port_file: Path | None) -> int:
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await app.stop(grace=5.0)
    log.info("stopped")
    return 0
