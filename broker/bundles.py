"""Policy bundle directories on disk (the shell side of broker.core.policy)."""

from __future__ import annotations

from pathlib import Path

from broker.errors import InvalidArgument


def read_bundle_dir(directory: Path) -> dict[str, bytes]:
    """Read a policy directory into {relative path: bytes} (TOML files only)."""
    if not directory.is_dir():
        raise InvalidArgument(f"policy directory {directory} does not exist")
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*.toml"))
    }
