"""Choosing the store in broker.toml and on the command line, and where clients connect."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.client.target import channel_target
from broker.config import load_config
from broker.errors import InvalidArgument

PG = "postgresql://broker@db.example:5432/broker"


def write(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(f"[server]\n{server}\n", encoding="utf-8")
    return path


def test_the_default_store_is_the_sqlite_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'data_dir = "d"'))
    assert config.store == ""
    assert config.database == tmp_path / "d" / "broker.sqlite3"


def test_postgresql_store_and_pool_sizes_from_the_file(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            f'store = "{PG}"\nstore_pool_min = 2\nstore_pool_max = 8\nstore_workers = 3',
        )
    )
    assert (config.store, config.store_pool_min, config.store_pool_max, config.store_workers) == (
        PG,
        2,
        8,
        3,
    )


def test_the_command_line_store_wins(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'store = "postgresql://a/b"'), store=PG)
    assert config.store == PG


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('store = "mysql://x/y"', "'mysql' is not supported"),
        ("store = 5", "must be a"),
        ("store_pool_min = 0", "1 <= min <= max"),
        ("store_pool_min = 5\nstore_pool_max = 4", "1 <= min <= max"),
        ("store_workers = 9", "store_workers must be between 1 and store_pool_max"),
        ('store_pool_max = "4"', "whole number"),
    ],
)
def test_bad_store_settings_say_what_to_write(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, line)
    with pytest.raises(InvalidArgument, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_one_broker_address_is_used_as_it_is() -> None:
    assert channel_target("broker.example:7443") == (
        "broker.example:7443",
        [("grpc.lb_policy_name", "pick_first")],
    )


def test_several_replicas_become_one_grpc_target() -> None:
    target, options = channel_target("10.0.0.1:7443, 10.0.0.2:7443", "round_robin")
    assert target == "ipv4:10.0.0.1:7443,10.0.0.2:7443"
    assert dict(options) == {
        "grpc.lb_policy_name": "round_robin",
        "grpc.ssl_target_name_override": "10.0.0.1",  # the name the certificate must carry
    }
    target, options = channel_target("[::1]:7443,[::1]:7444")
    assert target == "ipv6:[::1]:7443,[::1]:7444"
    assert dict(options)["grpc.ssl_target_name_override"] == "::1"


@pytest.mark.parametrize(
    ("broker", "policy", "message"),
    [
        ("a.example:1,b.example:2", "pick_first", "IP addresses"),
        ("10.0.0.1:1,[::1]:2", "pick_first", "all be IPv4 or all be IPv6"),
        ("10.0.0.1,10.0.0.2:2", "pick_first", "host:port"),
        ("10.0.0.1:1", "random", "lb_policy"),
        (" , ", "pick_first", "no broker address"),
    ],
)
def test_bad_broker_addresses_are_refused(broker: str, policy: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        channel_target(broker, policy)
