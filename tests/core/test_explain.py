"""Explaining a decision from a partial draft (broker/core/explain.py): every kind of the
shipped catalogue, asked about one section, passes the catalogue's checks once its
defaults are filled in, and what was assumed is said."""

from __future__ import annotations

import dataclasses

import pytest

from broker.bundles import read_bundle_dir
from broker.core.explain import complete_draft
from broker.core.policy import compile_bundle
from broker.core.policy.bundle import PolicyError
from broker.core.policy.model import NoticeFacts
from broker.sandbox import REPO_POLICIES

BUNDLE = compile_bundle(read_bundle_dir(REPO_POLICIES))


@pytest.mark.parametrize("kind", sorted(BUNDLE.kinds))
def test_every_kind_explains_with_one_section(kind: str) -> None:
    spec = BUNDLE.kinds[kind]
    section = spec.sections[-1]
    facts = NoticeFacts(
        originator="FR-NCB", kind=kind, purpose="", tlp="AMBER", sections=(section,)
    )
    with pytest.raises(PolicyError):
        BUNDLE.check_notice(facts)  # as the draft stands, the catalogue refuses it
    draft = complete_draft(BUNDLE, facts)
    BUNDLE.check_notice(draft.facts)
    assert draft.asked == (section,)
    assert f"purpose={spec.purposes[0]}" in draft.assumed
    assert draft.facts.data_subject == spec.data_subjects[0]
    added = [s for s in spec.required_sections if s != section]
    assert (f"sections+={','.join(added)}" in draft.assumed) == bool(added)


def test_what_is_given_is_kept() -> None:
    facts = NoticeFacts(
        originator="FR-NCB",
        kind="interpol.diffusion",
        purpose="investigation",
        tlp="AMBER",
        sections=(),
        data_subject="witness",
        evaluation=("A", "1"),
    )
    draft = complete_draft(BUNDLE, facts)
    assert draft.assumed == ()
    assert draft.asked == BUNDLE.kinds["interpol.diffusion"].sections  # none given: all
    assert dataclasses.replace(draft.facts, sections=()) == facts
    unknown = dataclasses.replace(facts, kind="interpol.magenta")
    assert complete_draft(BUNDLE, unknown).facts == unknown
