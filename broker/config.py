"""broker.toml: the broker's configuration file, with defaults for the embedded setup."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from broker.core.relay import Limits
from broker.errors import InvalidArgument
from broker.store.backends import check_store


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:7443"
    broker_id: str = "broker"
    data_dir: Path = Path("data/broker")
    keys_dir: Path = Path("data/keys")
    policy_dir: Path = Path("policies")
    registry: Path = Path("data/registry.toml")
    reflection: bool = True
    metrics_listen: str = "127.0.0.1:9464"  # empty: no metrics endpoint
    log_level: str = "INFO"
    log_format: str = "json"  # json | text
    expiry_interval_s: float = 1.0
    # "" keeps the SQLite file under data_dir; a postgresql:// URL shares one database
    # between several broker replicas (README: "Several replicas on PostgreSQL").
    store: str = ""
    store_pool_min: int = 1  # PostgreSQL connections kept open
    store_pool_max: int = 4  # at most this many
    store_workers: int = 2  # transactions committed at once (StoreRunner threads)
    limits: Limits = field(default_factory=Limits)

    @property
    def database(self) -> Path:
        return self.data_dir / "broker.sqlite3"


_PATHS = {"data_dir", "keys_dir", "policy_dir", "registry"}


def load_config(path: Path | None, **overrides: Any) -> ServerConfig:
    """Read broker.toml (sections [server] and [limits]); relative paths are relative to it.

    Raises InvalidArgument naming the file and key on any problem.
    """
    values: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InvalidArgument(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"{path}: {exc}") from exc
        base = path.parent
        values = dict(doc.get("server", {}))
        limits = dict(doc.get("limits", {}))
        unknown = sorted(set(doc) - {"server", "limits"})
        if unknown:
            raise InvalidArgument(f"{path}: unknown section(s) {unknown}")
    known = {f.name for f in fields(ServerConfig)} - {"limits"}
    bad = sorted(set(values) - known)
    if bad:
        raise InvalidArgument(f"{path}: unknown key(s) in [server]: {bad}")
    known_limits = {f.name for f in fields(Limits)}
    bad = sorted(set(limits) - known_limits)
    if bad:
        raise InvalidArgument(f"{path}: unknown key(s) in [limits]: {bad}")
    # Paths in the file are relative to the file; paths given on the command line to the
    # current directory.
    for key in _PATHS & set(values):
        p = Path(values[key])
        values[key] = p if p.is_absolute() else base / p
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not isinstance(values.get("listen", ""), str):
        raise InvalidArgument(f'{path}: [server] listen must be a "host:port" string')
    try:
        config = ServerConfig(**values, limits=Limits(**limits))
    except TypeError as exc:
        raise InvalidArgument(f"{path}: {exc}") from exc
    if not isinstance(config.store, str):
        raise InvalidArgument(f'{path}: [server] store must be a "postgresql://..." string')
    try:
        check_store(
            config.store, config.store_pool_min, config.store_pool_max, config.store_workers
        )
    except InvalidArgument as exc:
        raise InvalidArgument(f"{path or 'command line'}: {exc}") from exc
    return config
