"""broker.toml: the broker's configuration file, with defaults for the embedded setup.

Every key is typed and ranged. Every problem is an InvalidArgument whose
message starts with ``file:line:column:`` (the key, or the table, at fault) and
says what to write instead; nothing else escapes the loader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from broker import tomlfile
from broker.core import bounds, receipts
from broker.core.identity import validate_id
from broker.core.relay import Limits
from broker.core.suites import SuitePolicy
from broker.crypto_config import check_crypto
from broker.errors import InvalidArgument
from broker.quotas import Quotas, check_quotas
from broker.store.backends import check_store
from broker.tomlfile import TomlText


@dataclass(frozen=True)
class AttachmentsConfig:
    """[attachments] (+ evidence): sealed attachment files (docs/evidence.md)."""

    max_bytes: int = 2 * 1024**3  # plaintext bytes per attachment
    # Where the ciphertext files live; "" means data_dir/attachments. Several replicas on
    # PostgreSQL must all name one shared directory (a network file system mount).
    dir: str = ""


ATTACHMENT_MAX_BYTES = 1 << 40  # the highest [attachments] max_bytes accepted (1 TiB)


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
    crypto: SuitePolicy = field(default_factory=SuitePolicy)  # [crypto]: envelope suites allowed
    attachments: AttachmentsConfig = field(default_factory=AttachmentsConfig)
    quotas: Quotas = field(default_factory=Quotas)  # per-agency rate limits (broker/quotas.py)

    @property
    def database(self) -> Path:
        return self.data_dir / "broker.sqlite3"

    @property
    def attachments_dir(self) -> Path:
        """Where attachment ciphertexts live ([attachments] dir, else data_dir/attachments)."""
        return Path(self.attachments.dir) if self.attachments.dir else self.data_dir / "attachments"


_PATHS = {"data_dir", "keys_dir", "policy_dir", "registry"}
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # the gRPC message limit (broker/server/app.py)
DAY_MS = 86_400_000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})")

# Ranges of the [limits] keys (inclusive). A key without an entry must be a
# non-negative integer.
LIMIT_RANGES: Mapping[str, tuple[int, int]] = {
    "max_envelope_bytes": (1024, MAX_MESSAGE_BYTES),
    "max_publish_batch": (1, bounds.max_items("broker.v1.PublishRequest.envelopes")),
    "max_sections": (1, bounds.max_items("broker.v1.WrapLeaf.sections")),
    "max_recipients": (1, bounds.max_items("broker.v1.Envelope.wraps")),
    "max_clock_skew_ms": (0, DAY_MS),
    "lease_ms": (1, DAY_MS),
    "max_attempts": (1, 1000),
    "max_receipts_per_batch": (1, receipts.MAX_BATCH),
}


class ConfigError(InvalidArgument):
    """broker.toml holds something the broker cannot use; str() starts with file:line:column."""


def load_config(path: Path | None, **overrides: Any) -> ServerConfig:
    """Read broker.toml ([server], [limits], [crypto], [attachments] and [quotas]); relative
    paths are relative to it.

    `overrides` (the command line's) replace the file's values and are checked the
    same way. Raises ConfigError naming the file, line, column and key on any problem.
    """
    doc: dict[str, Any] = {}
    src = TomlText("broker.toml", "")
    base = Path.cwd()
    if path is not None:
        doc, src = tomlfile.read(path, ConfigError, "config file")
        base = path.parent
    for name, value in doc.items():
        if name not in ("server", "limits", "crypto", "attachments", "quotas"):
            raise ConfigError(
                f"{src.where((), name)}: unknown table {bounds.quote(name)}: "
                "broker.toml has [server], [limits], [crypto], [attachments] and [quotas]"
            )
        if not isinstance(value, dict):
            raise ConfigError(
                f"{src.where((), name)}: {name} must be a table: "
                f"write [{name}] and its keys on the lines below"
            )
    server = _check_server(src, dict(doc.get("server", {})), base)
    for key, value in overrides.items():
        if value is None:
            continue
        server[key] = _check_override(key, value)
    limits = _check_limits(src, dict(doc.get("limits", {})))
    crypto = check_crypto(src, dict(doc.get("crypto", {})), ConfigError)
    attachments = _check_attachments(src, dict(doc.get("attachments", {})), base)
    quotas = check_quotas(src, doc.get("quotas", {}), ConfigError)
    config = ServerConfig(
        **server, limits=Limits(**limits), crypto=crypto, attachments=attachments, quotas=quotas
    )
    try:
        check_store(
            config.store, config.store_pool_min, config.store_pool_max, config.store_workers
        )
    except InvalidArgument as exc:
        named = [
            k for k in ("store", "store_pool_min", "store_pool_max", "store_workers") if k in server
        ]
        if src.lines and named:
            raise ConfigError(f"{src.where(('server',), named[0])}: {exc}") from exc
        raise ConfigError(f"{path or 'command line'}: {exc}") from exc
    return config


def _shown(value: Any) -> str:
    """A TOML value as the operator wrote it (short)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value[: bounds.QUOTE_CHARS], ensure_ascii=False)
        return shown if len(value) <= bounds.QUOTE_CHARS else shown + "…"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return str(value)  # TOML numbers fit in 64 bits; dates are short


class _Wrong(Exception):
    """Raised by a check with what the value must be ("an integer from 1 to 1000")."""


Check = Callable[[str, Any], Any]  # (key, value) -> the value to use, or raises _Wrong


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _Wrong("a string")
    if bounds.CONTROL_CHARS.search(value):
        raise _Wrong("a string without control characters")
    return value


def _path(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _Wrong('a path (a non-empty string such as "data/broker")')
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Wrong("true or false")
    return value


def _address(allow_empty: bool) -> Check:
    def check(key: str, value: Any) -> str:
        hint = 'a "host:port" string such as "127.0.0.1:7443"' + (
            ' (or "" to disable it)' if allow_empty else ""
        )
        if not isinstance(value, str):
            raise _Wrong(hint)
        if value == "" and allow_empty:
            return value
        m = _ADDRESS.fullmatch(value)
        if m is None or int(m["port"]) > 65535:
            raise _Wrong(hint)
        return value

    return check


def _broker_id(key: str, value: Any) -> str:
    try:
        return validate_id(value)
    except InvalidArgument:
        raise _Wrong("an id of 1 to 64 characters from A-Z a-z 0-9 . _ -") from None


def _log_level(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise _Wrong(f"one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _log_format(key: str, value: Any) -> str:
    if value not in ("json", "text"):
        raise _Wrong('"json" or "text"')
    return str(value)


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise _Wrong("a number of seconds above 0 and at most 3600")
    return float(value)


def _pool_size(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
        raise _Wrong("a whole number from 0 to 1000")
    return value


SERVER_KEYS: Mapping[str, Check] = {
    "store": _string,
    "store_pool_min": _pool_size,
    "store_pool_max": _pool_size,
    "store_workers": _pool_size,
    "listen": _address(allow_empty=False),
    "broker_id": _broker_id,
    "data_dir": _path,
    "keys_dir": _path,
    "policy_dir": _path,
    "registry": _path,
    "reflection": _bool,
    "metrics_listen": _address(allow_empty=True),
    "log_level": _log_level,
    "log_format": _log_format,
    "expiry_interval_s": _seconds,
}


def _by_default(default: Any) -> Check:
    """The check for a key without an entry above, from its default's type."""
    if isinstance(default, bool):
        return _bool
    if isinstance(default, Path):
        return _path
    if isinstance(default, str):
        return _string
    if isinstance(default, float):
        return lambda key, value: _number_at_least(value, 0)
    return lambda key, value: _integer(value, 0, bounds.INT64_MAX)


def _number_at_least(value: Any, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise _Wrong(f"a number of at least {low}")
    return float(value)


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Wrong(f"an integer from {low} to {high}")
    return value


def _error(src: TomlText, table: str, key: str, message: str) -> ConfigError:
    if not src.lines:
        return ConfigError(message)
    return ConfigError(f"{src.where((table,), key)}: {message}")


def _check_server(src: TomlText, values: dict[str, Any], base: Path) -> dict[str, Any]:
    defaults = {
        f.name: f.default
        for f in fields(ServerConfig)
        if f.name not in ("limits", "crypto", "attachments", "quotas")
    }
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in defaults:
            raise _error(
                src,
                "server",
                key,
                f"unknown key {bounds.quote(key)} in [server]: use one of "
                + ", ".join(sorted(defaults)),
            )
        check = SERVER_KEYS.get(key) or _by_default(defaults[key])
        try:
            checked = check(key, value)
        except _Wrong as exc:
            raise _error(
                src, "server", key, f"[server] {key} must be {exc}, not {_shown(value)}"
            ) from None
        if key in _PATHS or isinstance(defaults[key], Path):
            p = Path(checked)
            checked = p if p.is_absolute() else base / p
        out[key] = checked
    return out


def _check_override(key: str, value: Any) -> Any:
    """A command-line value: checked like the file's; paths relative to the current directory."""
    defaults = {f.name: f.default for f in fields(ServerConfig)}
    if key not in defaults or key in ("limits", "crypto", "attachments", "quotas"):
        raise ConfigError(f"unknown setting {key}")
    raw = str(value) if isinstance(value, Path) else value
    check = SERVER_KEYS.get(key) or _by_default(defaults[key])
    try:
        checked = check(key, raw)
    except _Wrong as exc:
        option = "--" + key.replace("_", "-")
        raise ConfigError(f"{option} must be {exc}, not {_shown(raw)}") from None
    if key in _PATHS or isinstance(defaults[key], Path):
        return Path.cwd() / checked if not Path(checked).is_absolute() else Path(checked)
    return checked


def _check_limits(src: TomlText, values: dict[str, Any]) -> dict[str, Any]:
    defaults = {f.name: f.default for f in fields(Limits)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in defaults:
            raise _error(
                src,
                "limits",
                key,
                f"unknown key {bounds.quote(key)} in [limits]: use one of "
                + ", ".join(sorted(defaults)),
            )
        low, high = LIMIT_RANGES.get(key, (0, bounds.INT64_MAX))
        try:
            if isinstance(defaults[key], int) and not isinstance(defaults[key], bool):
                out[key] = _integer(value, low, high)
            else:
                out[key] = _by_default(defaults[key])(key, value)
        except _Wrong as exc:
            raise _error(
                src, "limits", key, f"[limits] {key} must be {exc}, not {_shown(value)}"
            ) from None
    return out


def _check_attachments(src: TomlText, values: dict[str, Any], base: Path) -> AttachmentsConfig:
    """[attachments]: max_bytes (an integer of bytes) and dir (a path, relative to the file)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        try:
            if key == "max_bytes":
                out[key] = _integer(value, 1, ATTACHMENT_MAX_BYTES)
            elif key == "dir":
                p = Path(_path(key, value))
                out[key] = str(p if p.is_absolute() else base / p)
            else:
                raise _error(
                    src,
                    "attachments",
                    key,
                    f"unknown key {bounds.quote(key)} in [attachments]: use one of dir, max_bytes",
                )
        except _Wrong as exc:
            raise _error(
                src, "attachments", key, f"[attachments] {key} must be {exc}, not {_shown(value)}"
            ) from None
    return AttachmentsConfig(**out)
