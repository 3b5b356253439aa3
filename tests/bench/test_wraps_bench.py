"""`broker bench wraps` through the real CLI, tiny: four wrap schemes timed in one run, every
wrap opened, and a broken scheme refused rather than timed."""

from __future__ import annotations

import json

import pytest

from broker.bench import wraps
from broker.cli.main import main
from broker.core import envelope_suite as es
from broker.core import hybrid as hy


def test_bench_wraps_reports_every_scheme_beside_ours(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "wraps", "--json", "--recipients", "3", "--rounds", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "broker-bench-wraps/1"
    assert (report["recipients"], report["rounds"]) == (3, 4)
    schemes = report["schemes"]
    assert list(schemes) == [s.name for s in wraps.SCHEMES]
    assert schemes[report["ours"]]["seal_ratio"] == schemes[report["ours"]]["open_ratio"] == 1.0
    for figures in schemes.values():
        for key in ("seal_us_per_notice", "open_us_per_wrap", "seal_ratio", "open_in_verifies"):
            assert figures[key] > 0, key
        assert figures["seal_us_per_wrap"] == pytest.approx(figures["seal_us_per_notice"] / 3)
    # what each wrap adds to the body: an X25519 key (or the KEM output) and a 16-byte tag
    assert schemes["sealed-box-shared"]["overhead_bytes_per_wrap"] == es.SEAL_OVERHEAD
    assert schemes["sealed-box-each"]["overhead_bytes_per_wrap"] == es.SEAL_OVERHEAD
    assert schemes["hpke-x25519"]["overhead_bytes_per_wrap"] == 32 + 16
    assert schemes["hpke-mlkem768-x25519"]["overhead_bytes_per_wrap"] == hy.ENC_SIZE + 16
    assert report["ed25519_verify_us"] > 0


def test_the_text_table_names_every_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "wraps", "--recipients", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for scheme in wraps.SCHEMES:
        assert scheme.name in out


def test_a_scheme_whose_wraps_do_not_open_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    real = es.seal_boxes

    def to_the_first_key(messages: list[tuple[bytes, bytes]], seed: bytes) -> list[bytes]:
        first = messages[0][1]  # every body sealed to the first recipient's key
        return [es.seal_box(m, first, bytes([i]) * 32) for i, (m, _pk) in enumerate(messages)]

    monkeypatch.setattr(es, "seal_boxes", to_the_first_key)
    with pytest.raises(wraps.WrapBenchError, match="sealed-box-shared: a wrap does not open"):
        wraps.run(3, 3)
    monkeypatch.setattr(es, "seal_boxes", lambda m, s: real(m, s)[:1] * len(m))
    with pytest.raises(wraps.WrapBenchError, match="sealed-box-shared"):
        wraps.run(3, 3)


@pytest.mark.parametrize(
    "argv", [["--rounds", "0"], ["--recipients", "0"], ["--recipients", "1001"]]
)
def test_out_of_range_arguments_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "wraps", *argv]) == 2
    assert "--recipients must be 1..1000 and --rounds 1..100000" in capsys.readouterr().err
    with pytest.raises(ValueError, match="recipients must be"):
        wraps.run(0, 1)
