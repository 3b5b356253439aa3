"""The broker's ML-DSA-65 log key on disk (broker/pqlog.py), `broker keys ... --pq` for a
broker, trust.toml's [log] suite, and what load_trust does with them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from broker import pqlog
from broker.cli.main import main
from broker.client import audit as ac
from broker.core.hybrid import SUITE_HYBRID
from broker.core.pqnote import parse_pq_verifier_key
from broker.core.suites import SuitePolicy
from broker.errors import FailedPrecondition, InvalidArgument, NotFound
from broker.trustconfig import load_trust_config


def keys_init(tmp_path: Path, *extra: str) -> Path:
    keys = tmp_path / "keys"
    assert main(["keys", "init", "--dir", str(keys), *extra]) == 0
    return keys


def test_keys_init_pq_writes_the_log_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = keys_init(tmp_path, "--pq")
    assert "log-pq.pub (ML-DSA-65 log key)" in capsys.readouterr().out
    key = keys / "brokers" / "broker" / pqlog.LOG_PQ_KEY
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(key.read_bytes()) == 32
    pub = pqlog.pq_log_pub_path(keys, "broker")
    verifier = parse_pq_verifier_key(pub.read_text().strip())
    assert verifier.name == "sealed-notice-broker/broker/ml-dsa-65"
    signer = pqlog.load_pq_log_signer(keys, "broker")
    assert signer is not None and signer.verifier == verifier
    before = key.read_bytes()
    assert main(["keys", "issue", "broker", "broker", "--pq", "--dir", str(keys)]) == 0
    assert key.read_bytes() == before  # never replaced: auditors trust checkpoints by it


def test_without_pq_a_broker_has_no_pq_log_key(tmp_path: Path) -> None:
    keys = keys_init(tmp_path)
    assert pqlog.load_pq_log_signer(keys, "broker") is None
    assert pqlog.pq_log_signer_for(keys, "broker", SuitePolicy()) is None
    only_hybrid = SuitePolicy(allowed=frozenset({SUITE_HYBRID}))
    with pytest.raises(FailedPrecondition, match="no post-quantum log key") as exc:
        pqlog.pq_log_signer_for(keys, "broker", only_hybrid)
    assert "broker keys issue broker broker --pq" in str(exc.value)
    # trust.toml expecting a hybrid log, but no log-pq.pub: said plainly
    (keys / "trust.toml").write_text('[log]\nsuite = "hybrid"\n')
    with pytest.raises(NotFound, match=r"copy the broker.s log-pq\.pub"):
        ac.load_trust(keys)
    assert ac.load_trust(keys, log_suite="classical").log_pq is None


def test_an_exposed_or_foreign_pq_log_key_is_refused(tmp_path: Path) -> None:
    keys = keys_init(tmp_path, "--pq")
    key = keys / "brokers" / "broker" / pqlog.LOG_PQ_KEY
    os.chmod(key, 0o644)
    with pytest.raises(FailedPrecondition):
        pqlog.load_pq_log_signer(keys, "broker")
    os.chmod(key, 0o600)
    (keys / "trust.toml").write_text('[log]\nsuite = "hybrid"\n')
    assert ac.load_trust(keys).log_pq is not None
    pub = pqlog.pq_log_pub_path(keys, "broker")
    pub.write_text((keys / "brokers" / "broker" / "log.pub").read_text())
    with pytest.raises(FailedPrecondition, match="not an ML-DSA-65 log verifier key"):
        ac.load_trust(keys)
    other = keys_init(tmp_path / "other", "--pq", "--broker-id", "b2")
    foreign = pqlog.pq_log_pub_path(other, "b2")
    with pytest.raises(FailedPrecondition, match="not the key of log sealed-notice-broker/broker"):
        ac.load_trust(keys, log_pq_key=foreign)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[log]\nsuite = "pq"\n', 'suite must be "classical" or "hybrid"'),
        ("[log]\nsuite = 1\n", 'suite must be "classical" or "hybrid"'),
        ('[log]\nsuites = "hybrid"\n', "unknown key"),
    ],
)
def test_trust_toml_suite_is_checked(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "trust.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=message):
        load_trust_config(path)


def test_trust_toml_suite_defaults_to_classical(tmp_path: Path) -> None:
    path = tmp_path / "trust.toml"
    assert load_trust_config(path).log_suite == "classical"
    path.write_text('[log]\nsuite = "hybrid"\n')
    assert load_trust_config(path).log_suite == "hybrid"
