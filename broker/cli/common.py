"""What every `broker` subcommand shares: the connection flags with their environment
variables, help that shows every default, and one way to print results.

    BROKER_TARGET   the broker's host:port           (--broker)
    BROKER_KEYS     the deployment keys directory    (--keys-dir)
    BROKER_AGENCY   this node's agency id            (--agency)

A flag given on the command line wins over its variable, which wins over the
built-in default; `--help` shows the default in effect and the variable.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

DEFAULT_TARGET = "127.0.0.1:7443"
DEFAULT_KEYS = Path("data/keys")
ENV_TARGET = "BROKER_TARGET"
ENV_KEYS = "BROKER_KEYS"
ENV_AGENCY = "BROKER_AGENCY"


def env_target() -> str:
    return os.environ.get(ENV_TARGET) or DEFAULT_TARGET


def env_keys() -> Path:
    value = os.environ.get(ENV_KEYS)
    return Path(value) if value else DEFAULT_KEYS


def add_target(p: argparse.ArgumentParser, help: str = "the broker's host:port") -> None:
    p.add_argument("--broker", default=env_target(), help=f"{help} (env {ENV_TARGET})")


def add_keys(p: argparse.ArgumentParser, help: str = "the deployment keys directory") -> None:
    p.add_argument("--keys-dir", type=Path, default=env_keys(), help=f"{help} (env {ENV_KEYS})")


def add_agency(p: argparse.ArgumentParser) -> None:
    agency = os.environ.get(ENV_AGENCY)
    p.add_argument(
        "--agency",
        required=not agency,
        default=agency or None,
        help=f"this node's agency id, e.g. FR-NCB (env {ENV_AGENCY})",
    )


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (when it has one worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if _worth_showing(action) and "%(default)" not in text and "default:" not in text:
            text = f"{text} (default: %(default)s)"
        return text


def _worth_showing(action: argparse.Action) -> bool:
    return (
        bool(action.option_strings)
        and action.default not in (None, False, [], "", argparse.SUPPRESS)
        and not isinstance(action, argparse._HelpAction | argparse._VersionAction)
    )


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out.extend(_all_parsers(sub))
    return out


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Give every parser in the tree the formatter that shows defaults, and a help line
    to options without one that have a default (so it shows too)."""
    for p in _all_parsers(parser):
        p.formatter_class = HelpFormatter
        for action in p._actions:
            if action.help is None and _worth_showing(action):
                action.help = "(default: %(default)s)"


def to_json_value(value: Any) -> Any:
    """Plain JSON values for CLI output: bytes as hex, tuples as lists."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return value
