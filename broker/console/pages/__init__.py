"""The console's pages. Each module here defines ``PAGE``: a :class:`Page` with its
routes, its place in the navigation and the identity it needs. To add a page (say
lookups or judicial requests), write ``pages/<name>.py`` with a ``PAGE`` and its
templates, and add the module name to :data:`PAGE_MODULES`."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.routing import BaseRoute, Route

from broker.console.web import Handler, view

AUDITOR = "auditor"
ADMIN = "admin"
ANY = "any"

PAGE_MODULES = (
    "home",
    "log",
    "flows",
    "notices",
    "policy",
    "registry",
    "queues",
    "pod",
    "confirm",
    "requests",  # + judicial
)


@dataclass(frozen=True)
class Page:
    name: str
    path: str  # where the navigation links to
    title: str
    needs: str  # AUDITOR, ADMIN or ANY (what it shows without it is up to the page)
    routes: tuple[BaseRoute, ...]
    summary: str = ""
    nav: bool = True


def get(path: str, handler: Handler) -> Route:
    return Route(path, view(handler), methods=["GET"])


def post(path: str, handler: Handler) -> Route:
    """A state-changing route: its handler must read the form with checked_form."""
    return Route(path, view(handler), methods=["POST"])


def load(modules: Sequence[str] = PAGE_MODULES) -> tuple[Page, ...]:
    pages = []
    for name in modules:
        module = importlib.import_module(f"broker.console.pages.{name}")
        pages.append(module.PAGE)
    return tuple(pages)
