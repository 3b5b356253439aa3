"""Deconfliction: tell agencies early that they may be working on the same person or
object (Europol's cross-matching and event deconfliction), without anyone showing a
subject in clear.

An agency registers the subjects of a case: its node first looks them up (OPRF tokens
through the lookup-key service; the broker sees tokens only), which finds the cases of
other agencies already registered on any of them and tells each of their originators
through a sealed ``reply.lookup_hit`` naming this agency (and what a lookup is, logged);
then it publishes a ``case.subjects`` notice to the coordination hub, carrying only the
case's reference and contact, indexed by the same tokens, so that whoever registers or
looks up one of those subjects later finds it, and this agency is told in turn. What a
match reveals to the querier is the catalogue's release level for ``case.subjects``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from broker.client.lookup import Lookups
from broker.client.types import PublishedNotice
from broker.core.selectors import Selector
from broker.v1 import lookup_pb2, notice_pb2

CASE_KIND = "case.subjects"
PURPOSE = "investigation"


@dataclass(frozen=True)
class CaseRegistration:
    """A registered case and the other agencies' cases it matched when registered."""

    notice: PublishedNotice
    matches: tuple[lookup_pb2.LookupHit, ...]  # one per other case hit (originator told)


async def register_case(
    lookups: Lookups,
    subjects: Collection[Selector],
    case_facts: bytes,
    *,
    note: str = "",
) -> CaseRegistration:
    """Register a case's `subjects` for deconfliction; return the registration and the
    cases of other agencies it matched (whose originators were each told, sealed)."""
    results = await lookups.lookup(list(subjects), PURPOSE, note=note or "case registration")
    me = lookups.node.me
    matches: dict[str, lookup_pb2.LookupHit] = {}
    for result in results:
        for hit in result.hits:
            if hit.kind == CASE_KIND and hit.originator != me:
                matches.setdefault(hit.notice_id, hit)
    notice = await lookups.publish(
        kind=CASE_KIND,
        selectors=subjects,
        purpose=PURPOSE,
        sections={"case_facts": case_facts},
        data_subject=notice_pb2.DATA_SUBJECT_SUSPECT,
    )
    return CaseRegistration(notice, tuple(matches[k] for k in sorted(matches)))
