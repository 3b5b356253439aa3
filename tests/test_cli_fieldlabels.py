"""The catalogue's field labels on the command line (broker/cli/fieldlabels.py): `broker
admin policy kinds DIR --lang` offline, and the labels a publish refusal adds to the
fields it names."""

from __future__ import annotations

import json

import pytest

from broker.bundles import read_bundle_dir
from broker.cli import fieldlabels
from broker.cli.main import main
from broker.core.policy import compile_bundle
from broker.sandbox import REPO_POLICIES

BUNDLE = compile_bundle(read_bundle_dir(REPO_POLICIES))
LABELS = BUNDLE.catalogue.labels


def test_policy_kinds_lists_fields_with_their_french_labels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["admin", "policy", "kinds", str(REPO_POLICIES), "--kind", "interpol.red"]
    assert main([*argv, "--lang", "fr"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "interpol.red (Notice rouge d'INTERPOL)"
    assert "  header: data_subject (Catégorie de personne concernée)" in out
    identity = next(line for line in out if line.startswith("  identity (Identité): "))
    assert "family_name (Nom de famille), forename (Prénom), date_of_birth (Date de naissance)" in (
        identity
    )
    assert main([*argv, "--lang", "es"]) == 0
    assert "family_name (Apellidos)" in capsys.readouterr().out


def test_policy_kinds_json_carries_identifiers_and_labels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["admin", "policy", "kinds", str(REPO_POLICIES), "--lang", "ar", "--json"]
    assert main(args) == 0
    rows = {r["kind"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(BUNDLE.kinds)
    art38 = dict((c["section"], c["fields"]) for c in rows["sis.art38"]["content_fields"])
    assert art38["action"] == [
        {"name": "action_on_hit", "label": LABELS.label("fields", "action_on_hit", "ar")}
    ]
    assert rows["interpol.yellow"]["content_fields"][0]["fields"][0] == {
        "name": "family_name",
        "label": "اسم العائلة",
    }


def test_policy_kinds_refuses_a_kind_the_bundle_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "policy", "kinds", str(REPO_POLICIES), "--kind", "interpol.zzz"]) == 2
    assert "the bundle has no kind 'interpol.zzz'" in capsys.readouterr().err


def test_a_refusal_names_the_missing_fields_with_their_labels() -> None:
    yellow = BUNDLE.kinds["interpol.yellow"]
    sections = {
        "identity": b"forename: Lena\ndate_of_birth: 2011-07-02\ndate_missing: 2026-11-30\n"
    }
    message = "interpol.yellow content: section 'identity' lacks family_name"
    named = fieldlabels.refused_fields(yellow, sections, message)
    assert named == ["family_name"]
    assert fieldlabels.gloss(LABELS, named, "fr") == " [fr: family_name = Nom de famille]"
    # A header field the kind requires, named by the refusal; none for other refusals.
    diffusion = BUNDLE.kinds["interpol.diffusion"]
    said = "interpol.diffusion needs an evaluation (source A/B/C/X, info 1-4)"
    assert fieldlabels.refused_fields(diffusion, {}, said) == ["evaluation"]
    assert fieldlabels.refused_fields(yellow, sections, "unknown purpose 'x'") == []
    assert fieldlabels.refused_fields(None, sections, message) == []
    assert fieldlabels.gloss(LABELS, [], "fr") == ""
