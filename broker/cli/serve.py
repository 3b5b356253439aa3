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
    setup_logging(config.log_level, config.log_format)
    return asyncio.run(serve(config, args.port_file))


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
