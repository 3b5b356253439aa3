"""The content manifest travels in each SectionDescriptor (broker/core/envelope.py):
signed through the header's sections_root, checked on names by the broker
(relay.accept_publish, via CheckedEnvelope.manifest) and handed to the recipient with
what it opens (OpenedNotice.manifest), for its own sections only."""

from __future__ import annotations

import pytest

from broker.core import envelope_suite as es
from broker.core.envelope import (
    EnvelopeError,
    SectionInput,
    check_envelope,
    delivery_for,
    seal,
)
from broker.v1 import notice_pb2

from .test_envelope import (
    HYBRID_PK,
    RECIPIENTS,
    RESTRICTIONS,
    SIGNING_KEYS,
    SUITE,
    make_header,
    open_as,
    shake_rng,
)

IDENTITY = ("family_name", "forename", "date_of_birth", "nationality")
SECTIONS = [
    SectionInput("identity", b"family_name: DOE\nforename: J", IDENTITY),
    SectionInput("biometrics", b"prints"),
    SectionInput("case_facts", b"offence: o\nsummary: s", ("offence", "summary")),
]


def _envelope() -> notice_pb2.Envelope:
    return seal(
        make_header(), RESTRICTIONS, SECTIONS, RECIPIENTS, SIGNING_KEYS[SUITE], shake_rng(b"m")
    )


def test_the_manifest_is_signed_in_the_descriptors_and_reaches_only_its_recipients() -> None:
    envelope = _envelope()
    checked = check_envelope(envelope, HYBRID_PK)
    assert checked.manifest == {
        "identity": IDENTITY,
        "biometrics": (),
        "case_facts": ("offence", "summary"),
    }
    # NL-POLITIE reads identity only: it learns nothing of the other sections' manifests.
    nl = delivery_for(envelope, "NL-POLITIE", ["identity"])
    assert dict(open_as(nl, "NL-POLITIE").manifest) == {"identity": IDENTITY}
    europol = delivery_for(envelope, "EUROPOL", ["identity", "biometrics", "case_facts"])
    opened = open_as(europol, "EUROPOL")
    assert dict(opened.manifest) == {"identity": IDENTITY, "case_facts": ("offence", "summary")}


def test_a_manifest_edited_after_signing_breaks_the_sections_root() -> None:
    envelope = _envelope()
    for section in envelope.sections:
        d = es.parse(notice_pb2.SectionDescriptor, section.descriptor)
        if d.name == "identity":
            del d.content_fields[2:]  # the broker (or anyone) drops two declared fields
            section.descriptor = es.serialize(d)
    with pytest.raises(EnvelopeError, match=r"do not hash to header\.sections_root"):
        check_envelope(envelope, HYBRID_PK)


def test_an_envelope_without_manifests_is_unchanged_on_the_wire() -> None:
    """Sections sealed without fields serialise as before manifests existed (the
    known-answer vectors stay valid)."""
    plain = [SectionInput(s.name, s.plaintext) for s in SECTIONS]
    envelope = seal(
        make_header(), RESTRICTIONS, plain, RECIPIENTS, SIGNING_KEYS[SUITE], shake_rng(b"m")
    )
    for section in envelope.sections:
        d = es.parse(notice_pb2.SectionDescriptor, section.descriptor)
        assert not d.content_fields
        assert b"family_name" not in section.descriptor
    assert check_envelope(envelope, HYBRID_PK).manifest == {
        "identity": (),
        "biometrics": (),
        "case_facts": (),
    }
