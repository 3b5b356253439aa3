"""What a console is started with: who it acts as, which broker, which trust anchors."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from broker.core.identity import validate_id
from broker.core.policy.labels import LANGUAGES
from broker.errors import InvalidArgument

DEFAULT_LISTEN = "127.0.0.1:8470"


@dataclass(frozen=True)
class ConsoleConfig:
    keys_dir: Path
    broker: str = "127.0.0.1:7443"
    auditor: str | None = None  # urn:broker:auditor:<id>: the log, flows, journeys, queues
    admin: str | None = None  # urn:broker:admin:<id>: policy, registry, signed actions
    broker_id: str = "broker"  # whose log key to trust
    witnesses: tuple[str, ...] = ()  # trusted witness agencies (empty: every agency in keys_dir)
    state_dir: Path = Path("data/console")  # the last checkpoint verified (fork detection)
    listen: str = DEFAULT_LISTEN
    lang: str = "en"  # the pages' default language (en, fr, es, ar); ?lang= switches

    def __post_init__(self) -> None:
        if self.auditor is None and self.admin is None:
            raise InvalidArgument(
                "the console needs an identity: --auditor ID (audit pages), --admin ID "
                "(policy and registry), or both"
            )
        for who in (self.auditor, self.admin):
            if who is not None:
                validate_id(who)
        if self.lang not in LANGUAGES:
            raise InvalidArgument(f"--lang {self.lang[:16]!r}: use one of {', '.join(LANGUAGES)}")
        if not _loopback(split_listen(self.listen)[0]):
            raise InvalidArgument(
                f"--listen {self.listen}: the console serves plain HTTP and binds only a "
                "loopback address (127.0.0.1, ::1 or localhost); reach it from elsewhere "
                "through an SSH tunnel"
            )

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def identities(self) -> str:
        who = []
        if self.auditor:
            who.append(f"auditor {self.auditor}")
        if self.admin:
            who.append(f"administrator {self.admin}")
        return " and ".join(who)


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port); raise InvalidArgument."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"--listen {listen!r}: use HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
