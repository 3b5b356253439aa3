"""Lookup tokens, the signed index commitment, release levels, hit replies, query patterns."""

from __future__ import annotations

import os

import pytest

from broker.core import lookup
from broker.core.policy.lookups import LookupSpec
from broker.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from broker.v1 import lookup_pb2, notice_pb2

TOKENS = [os.urandom(32) for _ in range(5)]


def committed() -> tuple[notice_pb2.NoticeHeader, notice_pb2.Envelope]:
    salt, tokens, digest = lookup.seal_index(TOKENS + TOKENS[:2], os.urandom)  # duplicates go
    header = notice_pb2.NoticeHeader(lookup_digest=digest)
    envelope = notice_pb2.Envelope(lookup_tokens=tokens, lookup_salt=salt)
    return header, envelope


def test_the_header_commits_to_the_tokens() -> None:
    header, envelope = committed()
    assert lookup.check_index(header, envelope) == sorted(TOKENS)
    for tamper in (
        lambda e: e.lookup_tokens.__setitem__(0, os.urandom(32)),  # another token
        lambda e: e.lookup_tokens.pop(),  # one dropped
        lambda e: e.lookup_tokens.reverse(),  # not sorted
        lambda e: setattr(e, "lookup_salt", b""),  # no salt
        lambda e: e.lookup_tokens.__setitem__(0, b"short"),  # malformed
    ):
        h, e = committed()
        tamper(e)
        with pytest.raises(InvalidArgument):
            lookup.check_index(h, e)
    with pytest.raises(InvalidArgument, match="lacks"):
        lookup.check_index(header, notice_pb2.Envelope())
    assert lookup.check_index(notice_pb2.NoticeHeader(), notice_pb2.Envelope()) == []
    with pytest.raises(InvalidArgument, match="at most"):
        lookup.seal_index([os.urandom(32) for _ in range(257)], os.urandom)


def test_the_digest_is_salted() -> None:
    a, b = committed(), committed()
    assert a[0].lookup_digest != b[0].lookup_digest  # same tokens, other salts


SPEC = LookupSpec(
    "sis.art36", ("vin",), "contact", {"border": "action", "police": "kind"}, "Check", 12
)
HIT = lookup.IndexedNotice("n1", 2, "DE-BKA", "sis.art36", 0, "discreet_check")


@pytest.mark.parametrize(
    ("roles", "held", "want"),
    [
        ((), 0, ("contact", "", "")),
        (("police",), 0, ("kind", "sis.art36", "")),
        (("police", "border"), 0, ("action", "sis.art36", "Check")),
        ((), 2, ("contact", "sis.art36", "")),  # holds it: may open it, so knows the kind
    ],
)
def test_release_levels(roles: tuple[str, ...], held: int, want: tuple[str, str, str]) -> None:
    hit = lookup.IndexedNotice("n1", 2, "DE-BKA", "sis.art36", held, "discreet_check")
    statement = notice_pb2.SignedKeyStatement(statement=b"s", signature=b"x").SerializeToString()
    out = lookup.release_of(hit, SPEC, roles, statement)
    assert (out.release, out.kind, out.action) == want
    assert (out.originator, out.notice_id, out.purpose) == ("DE-BKA", "n1", "discreet_check")
    assert out.respond_within_ms == 12 * 3_600_000 and out.held_version == held
    assert lookup.release_of(HIT, None, roles, statement).release == "contact"


def test_hit_replies_need_a_hit_and_go_to_the_originator() -> None:
    header = notice_pb2.NoticeHeader(kind=lookup.HIT_KIND, in_reply_to="n1", originator="IT-X")
    to = frozenset({"DE-BKA"})
    lookup.check_hit_reply(header, to, "DE-BKA", "", True)
    with pytest.raises(NotFound):
        lookup.check_hit_reply(header, to, "DE-BKA", "", False)
    with pytest.raises(NotFound):
        lookup.check_hit_reply(header, to, None, "", True)
    with pytest.raises(FailedPrecondition):
        lookup.check_hit_reply(header, to, "DE-BKA", "withdrawn", True)
    with pytest.raises(PermissionDenied):
        lookup.check_hit_reply(header, frozenset({"DE-BKA", "FR-NCB"}), "DE-BKA", "", True)


def test_lookup_requests_are_checked() -> None:
    purposes = ["border_control"]
    ok = lookup_pb2.LookupRequest(tokens=TOKENS, purpose="border_control")
    assert lookup.check_lookup(ok, purposes) == TOKENS
    with pytest.raises(InvalidArgument, match="at least one"):
        lookup.check_lookup(lookup_pb2.LookupRequest(purpose="border_control"), purposes)
    with pytest.raises(InvalidArgument, match="at most 1024"):
        big = lookup_pb2.LookupRequest(tokens=[b"x" * 32] * 1025, purpose="border_control")
        lookup.check_lookup(big, purposes)
    with pytest.raises(InvalidArgument, match="not in the catalogue"):
        lookup.check_lookup(lookup_pb2.LookupRequest(tokens=TOKENS, purpose="fun"), purposes)


def test_query_patterns_show_repeated_no_hits() -> None:
    from broker.core.lookup import query_patterns
    from broker.v1 import lookup_pb2

    fishing = [
        lookup_pb2.LookupPerformed(querier="XX-POL", purpose="investigation", token_digests=[b"a"])
        for _ in range(5)
    ]
    border = [
        lookup_pb2.LookupPerformed(
            querier="IT-BORDER", purpose="border_control", token_digests=[b"p", b"n"],
            hit_indexes=[0], hit_notices=["n1"], hit_originators=["FR-NCB"],
        )
    ]  # fmt: skip
    [it, xx] = query_patterns([*fishing, *border])
    assert (it.querier, it.lookups, it.tokens, it.hits, it.repeated) == ("IT-BORDER", 1, 2, 1, ())
    assert xx.repeated == ((b"a".hex(), 5, 0),) and xx.no_hit_share == 1.0
    assert xx.purposes == (("investigation", 5),)
