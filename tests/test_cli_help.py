"""Every `broker ... --help` shows its defaults and the environment variables behind the
connection flags; the variables set those defaults; `broker --version`."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from broker.cli import common
from broker.cli.main import build_parser, version

ENV = {"--broker": "BROKER_TARGET", "--keys-dir": "BROKER_KEYS", "--agency": "BROKER_AGENCY"}


def parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.extend(parsers(sub, (*path, name)))
    return out


def test_every_help_names_the_variables_and_shows_defaults() -> None:
    checked = 0
    for path, parser in parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            for flag, var in ENV.items():
                # Where a default applies (serve's --keys-dir only overrides its config).
                if flag in action.option_strings and (action.default or action.required):
                    assert f"(env {var})" in (action.help or ""), (path, flag)
                    checked += 1
            shown = action.default not in (None, False, [], "", argparse.SUPPRESS)
            if action.option_strings and shown and action.option_strings[0] not in ("-h",):
                assert "(default: " in (action.help or "") or "default: " in text, (path, action)
        assert "--help" in text
    assert checked > 50  # node, admin, audit, status, console ... all carry them


def test_keys_commands_name_their_variable_too() -> None:
    for path, parser in parsers(build_parser()):
        if path[:1] != ("keys",):
            continue
        for action in parser._actions:
            if "--dir" in action.option_strings:
                assert "(env BROKER_KEYS)" in (action.help or ""), path


def test_the_variables_set_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_TARGET", "10.0.0.9:7443")
    monkeypatch.setenv("BROKER_KEYS", "/srv/keys")
    monkeypatch.setenv("BROKER_AGENCY", "DE-BKA")
    args = build_parser().parse_args(["node", "replies"])  # no --agency: from the variable
    assert (args.broker, str(args.keys_dir), args.agency) == (
        "10.0.0.9:7443",
        "/srv/keys",
        "DE-BKA",
    )
    monkeypatch.delenv("BROKER_AGENCY")
    with pytest.raises(SystemExit):  # without it, --agency is required again
        build_parser().parse_args(["node", "replies"])
    assert common.env_target() == "10.0.0.9:7443"


def test_version() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and r.stdout.strip() == f"broker {version()}"
    assert version().count(".") >= 2
