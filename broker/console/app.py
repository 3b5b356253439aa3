"""The console's web application (Starlette, Jinja2 templates, uvicorn) and its runner."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from broker.console import pages
from broker.console.config import ConsoleConfig
from broker.console.confirm import PendingActions
from broker.console.security import Guard, GuardMiddleware
from broker.console.sources import Sources
from broker.console.web import Console

HERE = Path(__file__).resolve().parent
MAX_BODY = 16 * 1024 * 1024  # an uploaded proof of delivery, or a form


def create_app(sources: Sources, guard: Guard) -> Starlette:
    loaded = pages.load()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # everything, including .svg partials
        undefined=jinja2.StrictUndefined,
    )
    templates = Jinja2Templates(env=env)
    console = Console(sources, guard, PendingActions(), loaded)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await sources.close()

    routes = [r for page in loaded for r in page.routes]
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, guard=guard)],
        lifespan=lifespan,
        max_body_size=MAX_BODY,
    )
    app.state.console = console
    app.state.guard = guard
    app.state.templates = templates
    return app


def bind(config: ConsoleConfig) -> socket.socket:
    """The listening socket (port 0: any free one), bound before anything is printed."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    host = "127.0.0.1" if config.host == "localhost" else config.host
    sock.bind((host, config.port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(
    config: ConsoleConfig, announce: Callable[[str], None], token: str | None = None
) -> None:
    """Run the console until cancelled (Ctrl-C or SIGTERM)."""
    sources = Sources(config)
    sock = bind(config)
    port = sock.getsockname()[1]
    guard = Guard(port, token)
    app = create_app(sources, guard)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    )
    host = "[::1]" if ":" in config.host else "127.0.0.1"
    announce(f"broker console for {config.identities}, talking to the broker at {config.broker}")
    announce(f"open {guard.login_url(host)}")
    announce("  (a new token every run: only whoever holds it can use the console; Ctrl-C stops)")
    try:
        await server.serve(sockets=[sock])
    except asyncio.CancelledError:
        pass
    finally:
        sock.close()
