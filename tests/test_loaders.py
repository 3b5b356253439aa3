"""Every loader (broker.toml, registry.toml, the policy bundle, the revocation list) refuses
ill-typed and out-of-range values with file:line:column and raises only the project's
error family. The cases here also write the loader table of docs/reliability.md."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker import pki
from broker.bundles import read_bundle_dir
from broker.config import ServerConfig, load_config
from broker.core.policy import compile_bundle
from broker.errors import BrokerError
from broker.registry import parse_registry
from broker.sandbox import REPO_POLICIES

from . import matrices

POLICY = compile_bundle(read_bundle_dir(REPO_POLICIES))
NESTED = "a = " + "[" * 5000 + "]" * 5000 + "\n"
AGENCY = '[agencies."FR-NCB"]\ncountry = "FR"\nroles = ["police"]\npurposes = ["locate_arrest"]\n'


@dataclass(frozen=True)
class Case:
    loader: str  # broker.toml | registry.toml | policy bundle | revoked.txt
    name: str
    content: bytes | None  # None: the file is a directory
    want: str  # a regex the message must match (after the file:line:column prefix)
    file: str = ""  # the bundle file replaced (policy cases)


def _c(loader: str, name: str, content: str | bytes | None, want: str, file: str = "") -> Case:
    data = content.encode() if isinstance(content, str) else content
    return Case(loader, name, data, want, file)


CASES = [
    # broker.toml (issue 11: tracebacks or silent acceptance before)
    _c("broker.toml", "server = 5", "server = 5\n", "server must be a table"),
    _c("broker.toml", 'server = ["a"]', 'server = ["a"]\n', "server must be a table"),
    _c("broker.toml", "data_dir = true", "[server]\ndata_dir = true\n", "data_dir must be a path"),
    _c(
        "broker.toml",
        'max_attempts = "x"',
        '[limits]\nmax_attempts = "x"\n',
        r'max_attempts must be an integer from 1 to 1000, not "x"',
    ),
    _c(
        "broker.toml",
        "lease_ms = -1",
        "[limits]\nlease_ms = -1\n",
        "lease_ms must be an integer from 1 to 86400000, not -1",
    ),
    _c(
        "broker.toml",
        "max_sections = 100000",
        "[limits]\nmax_sections = 100000\n",
        "max_sections must be an integer from 1 to 64",
    ),
    _c(
        "broker.toml",
        "max_envelope_bytes = 1.5",
        "[limits]\nmax_envelope_bytes = 1.5\n",
        "max_envelope_bytes must be an integer",
    ),
    _c("broker.toml", "listen = 5", "[server]\nlisten = 5\n", 'listen must be a "host:port"'),
    _c(
        "broker.toml",
        'listen = "nowhere"',
        '[server]\nlisten = "nowhere"\n',
        'listen must be a "host:port"',
    ),
    _c(
        "broker.toml",
        "a port beyond 65535",
        '[server]\nmetrics_listen = "127.0.0.1:70000"\n',
        "metrics_listen must be",
    ),
    _c(
        "broker.toml",
        "broker_id with a space",
        '[server]\nbroker_id = "a b"\n',
        "broker_id must be an id",
    ),
    _c(
        "broker.toml",
        "expiry_interval_s = 0",
        "[server]\nexpiry_interval_s = 0\n",
        "expiry_interval_s must be a number of seconds above 0",
    ),
    _c(  # + fair sharing: [quotas] (broker/quotas.py)
        "broker.toml",
        "publishes_per_second = -1",
        "[quotas]\npublishes_per_second = -1\n",
        r"\[quotas\] publishes_per_second must be an integer from 0 \(no limit\)",
    ),
    _c(
        "broker.toml",
        "a burst below its rate",
        "[quotas]\nlookups_per_second = 10\nlookup_burst = 2\n",
        "lookup_burst must be at least lookups_per_second",
    ),
    _c(
        "broker.toml",
        "an unknown per-agency quota",
        "[quotas.agencies.FR-NCB]\nspeed = 1\n",
        r"unknown key 'speed' in \[quotas.agencies.FR-NCB\]",
    ),
    _c(
        "broker.toml",
        'reflection = "yes"',
        '[server]\nreflection = "yes"\n',
        "reflection must be true or false",
    ),
    _c(
        "broker.toml",
        'log_level = "LOUD"',
        '[server]\nlog_level = "LOUD"\n',
        "log_level must be one of DEBUG",
    ),
    _c("broker.toml", "unknown key", "[server]\n  bogus = 1\n", "unknown key 'bogus' in"),
    _c("broker.toml", "unknown table", "[quota]\nx = 1\n", "unknown table 'quota'"),
    _c(  # + evidence
        "broker.toml",
        "attachments max_bytes = 0",
        "[attachments]\nmax_bytes = 0\n",
        r"\[attachments\] max_bytes must be an integer from 1",
    ),
    _c(
        "broker.toml",
        "attachments unknown key",
        "[attachments]\nmax_size = 1\n",
        r"unknown key 'max_size' in \[attachments\]",
    ),
    _c("broker.toml", "TOML syntax", "[server\n", "invalid TOML"),
    _c("broker.toml", "nested 5000 deep", NESTED, "nested too deeply"),
    _c("broker.toml", "not UTF-8", b"\xff\xfe", "not UTF-8"),
    _c("broker.toml", "a directory", None, "is a directory"),
    # registry.toml
    _c("registry.toml", "agencies = []", "agencies = []\n", "agencies must be tables"),
    _c("registry.toml", "no agencies", "# nothing\n", "no agencies"),
    _c("registry.toml", "an agency that is not a table", "[agencies]\nFR = 5\n", "must be a table"),
    _c("registry.toml", "no country", '[agencies."FR-NCB"]\nroles = []\n', "country must be"),
    _c(
        "registry.toml",
        'country = "France"',
        '[agencies."FR-NCB"]\ncountry = "France"\n',
        "country must be an ISO 3166-1",
    ),
    _c(
        "registry.toml",
        "a role the catalogue lacks",
        AGENCY.replace('["police"]', '["spy"]'),
        "unknown role 'spy': the policy knows",
    ),
    _c(
        "registry.toml",
        "a purpose the catalogue lacks",
        AGENCY.replace('["locate_arrest"]', '["fishing"]'),
        "unknown purpose 'fishing'",
    ),
    _c(
        "registry.toml",
        "a group groups.toml lacks",
        AGENCY + 'groups = ["nowhere"]\n',
        "unknown group 'nowhere'",
    ),
    _c(
        "registry.toml",
        'roles = "police"',
        AGENCY.replace('["police"]', '"police"'),
        "roles must be a list",
    ),
    _c(
        "registry.toml",
        "a role twice",
        AGENCY.replace('["police"]', '["police", "police"]'),
        "lists 'police' twice",
    ),
    _c(
        "registry.toml",
        'status = "retired"',
        AGENCY + 'status = "retired"\n',
        "status must be one of",
    ),
    _c("registry.toml", "unknown key", AGENCY + 'colour = "red"\n', "unknown key 'colour'"),
    _c(
        "registry.toml",
        "an id with a space",
        AGENCY.replace('"FR-NCB"', '"FR NCB"'),
        "invalid id 'FR NCB'",
    ),
    _c("registry.toml", "nested 5000 deep", NESTED, "nested too deeply"),
    _c(
        "registry.toml",
        "an id of 100 KB",
        AGENCY.replace('"FR-NCB"', '"' + "F" * 100_000 + '"'),
        r"invalid id 'F{32}'… \(100000 bytes\)",
    ),
    # the policy bundle (one file replaced in the shipped bundle)
    _c(
        "policy bundle",
        "groups = []",
        "groups = []\n",
        "groups must be tables",
        "groups.toml",
    ),
    _c("policy bundle", "nested 5000 deep", NESTED, "nested too deeply", "groups.toml"),
    _c(
        "policy bundle",
        "a group without members",
        '[groups.x]\ntitle = "x"\n',
        "has no members",
        "groups.toml",
    ),
    _c("policy bundle", "kinds = []", "kinds = []\n", "needs a non-empty", "catalogue.toml"),
    _c("policy bundle", "rule = 5", "rule = 5\n", "needs at least one", "rules/zz.toml"),
    _c(
        "policy bundle",
        "a rule naming an unknown role",
        '[[rule]]\nid = "x.permit"\neffect = "permit"\nreason = "r"\nrecipient_roles = ["spy"]\n',
        "names unknown role 'spy'",
        "rules/zz.toml",
    ),
    _c(
        "policy bundle", "a key outside [[rule]]", 'id = "x"\n', "unknown key 'id'", "rules/zz.toml"
    ),
    _c(
        "policy bundle",
        "a rule id of 100 KB",
        '[[rule]]\nid = "' + "x" * 100_000 + '"\neffect = "permit"\nreason = "r"\n',
        r"rule 'x{32}'… \(100000 bytes\): a permit must say whom",
        "rules/zz.toml",
    ),
    # the revocation list
    _c(
        "revoked.txt",
        "not a URI",
        "# revoked\n  FR-NCB\n",
        "not a broker party URI",
    ),
    _c(
        "revoked.txt",
        "an unknown party kind",
        "urn:broker:spy:X\n",
        "unknown party kind",
    ),
    _c("revoked.txt", "an id with a space", "urn:broker:agency:FR NCB\n", "invalid id"),
    _c("revoked.txt", "not UTF-8", b"\xff\n", "not UTF-8"),
    _c("revoked.txt", "a directory", None, "cannot read the revocation list"),
]

LOCATED = re.compile(r"^(?P<file>[\w./-]+):(?P<line>\d+):(?P<col>\d+): ")


def _write(path: Path, content: bytes | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)


def run_case(case: Case, root: Path) -> BrokerError:
    """Load the case's file with its loader; return the error it raised."""
    load: Callable[[], object]
    if case.loader == "broker.toml":
        path = root / "broker.toml"
        _write(path, case.content)
        load = lambda: load_config(path)  # noqa: E731
    elif case.loader == "registry.toml":
        path = root / "registry.toml"
        _write(path, case.content)
        load = lambda: parse_registry(path, POLICY)  # noqa: E731
    elif case.loader == "revoked.txt":
        _write(root / "ca" / "revoked.txt", case.content)
        load = lambda: pki.revoked_parties(root)  # noqa: E731
    else:
        files = read_bundle_dir(REPO_POLICIES)
        assert case.content is not None
        files[case.file] = case.content
        load = lambda: compile_bundle(files)  # noqa: E731
    with pytest.raises(BrokerError) as info:
        load()
    return info.value


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.loader}: {c.name}")
def test_loader_refuses_with_file_line_column(case: Case, tmp_path: Path) -> None:
    error = run_case(case, tmp_path)
    message = str(error)
    assert re.search(case.want, message), message
    assert len(message) < 400, message  # never the whole offending input
    if case.content is not None:  # a directory has no line to point at
        m = LOCATED.match(matrices.normalise(message, tmp_path))
        assert m is not None, f"no file:line:column in {message!r}"
        assert int(m["line"]) >= 1 and int(m["col"]) >= 1


def test_locations_point_at_the_key(tmp_path: Path) -> None:
    text = '[server]\nlisten = "127.0.0.1:7443"\n\n[limits]\n  lease_ms = -1\n'
    assert ":5:3: [limits] lease_ms" in str(run_case(_c("broker.toml", "", text, ""), tmp_path))
    text = AGENCY + 'status = "retired"\n'
    message = str(run_case(_c("registry.toml", "", text, ""), tmp_path))
    assert ":5:1: agencies.FR-NCB.status" in message


def test_a_good_file_loads_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "broker.toml").write_text(
        '[server]\nlisten = "[::1]:7443"\ndata_dir = "d"\nlog_level = "debug"\n'
        "expiry_interval_s = 2\n\n[limits]\nlease_ms = 1000\nmax_attempts = 3\n"
    )
    config = load_config(tmp_path / "broker.toml")
    assert config.listen == "[::1]:7443" and config.data_dir == tmp_path / "d"
    assert config.log_level == "DEBUG" and config.expiry_interval_s == 2.0
    assert config.limits.lease_ms == 1000 and config.limits.max_attempts == 3
    assert load_config(None) == ServerConfig()


def test_command_line_values_are_checked_too(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=r'^--listen must be a "host:port" string'):
        load_config(None, listen="nowhere")
    config = load_config(None, listen="127.0.0.1:0", data_dir=Path("rel"))
    assert config.data_dir == Path.cwd() / "rel"


def test_the_shipped_registry_of_the_demo_passes(tmp_path: Path) -> None:
    from broker.sandbox import DEMO_AGENCIES, create_deployment

    deployment = create_deployment(tmp_path, DEMO_AGENCIES)
    profiles = parse_registry(deployment.registry, POLICY)
    assert sorted(profiles) == sorted(a.id for a in DEMO_AGENCIES)


def test_loader_table_in_docs(tmp_path: Path) -> None:
    rows = []
    for i, case in enumerate(CASES):
        root = tmp_path / str(i)
        message = matrices.normalise(str(run_case(case, root)), root)
        rows.append([case.loader, matrices.cell(case.name), matrices.code(message)])
    matrices.sync(
        "loaders", matrices.table(["file", "case", "error (exit 2 from broker serve)"], rows)
    )
