"""broker/core is the functional core: no I/O, no clock, no randomness, no shells."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "broker" / "core"
FORBIDDEN = {
    "grpc",
    "sqlite3",
    "psycopg",
    "asyncpg",
    "asyncio",
    "os",
    "pathlib",
    "time",
    "datetime",
    "random",
    "secrets",
    "socket",
    "subprocess",
    "threading",
    "uuid",
    "broker.server",
    "broker.store",
    "broker.client",
    "broker.cli",
    "broker.pki",
    "broker.v1.agency_pb2_grpc",
}


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def offending(names: set[str]) -> set[str]:
    return {n for n in names for f in FORBIDDEN if n == f or n.startswith(f + ".")}


def test_core_imports_no_shell_module() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 8
    bad = {
        str(path.relative_to(CORE)): sorted(
            offending(imported_modules(ast.parse(path.read_text())))
        )
        for path in files
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_check_catches_a_forbidden_import() -> None:
    tree = ast.parse("import asyncio\nfrom grpc import aio\nfrom broker.store.sqlite import X\n")
    assert offending(imported_modules(tree)) >= {"asyncio", "grpc", "broker.store.sqlite"}
