"""Lookups end to end over real gRPC with mutual TLS: a real broker, a real lookup-key
service process-in-the-loop (its own server and key), real agency nodes.

What each test would catch: a hit that is not found, a no-hit that hits, the policy
releasing more (or less) than the catalogue says, a hit notification that never reaches
the originator (or is not sealed, or has no deadline), a lookup missing from the log,
index entries that survive withdrawal, expiry or a new version, tokens the header does
not commit to, and the key service evaluating for someone who is not an agency.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from broker.client.lookup import LookupKeyClient, Lookups
from broker.core import logleaf, oprf
from broker.core.identity import Party
from broker.core.selectors import canonical_forms, parse_selector
from broker.errors import ResourceExhausted
from broker.lookupkey import KeyServer, KeyServiceConfig, RateLimiter
from broker.sandbox import AUDITOR_ID, LOOKUP_ID, Deployment
from broker.v1 import lookup_pb2, lookup_pb2_grpc

from .conftest import Running
from .helpers import RED_SECTIONS

pytestmark = pytest.mark.integration
SECTIONS = {k: v for k, v in RED_SECTIONS.items() if k != "biometrics"}
PASSPORT = parse_selector("travel_document=FR;P;19FR23456")
PERSON = parse_selector("person=DUPONT, Jean;14.03.1981")


@pytest.fixture
async def key_server(deployment: Deployment) -> AsyncIterator[KeyServer]:
    server = KeyServer(
        KeyServiceConfig(
            LOOKUP_ID, deployment.keys_dir, deployment.root / "lookup", listen="127.0.0.1:0"
        )
    )
    await server.start()
    yield server
    await server.stop(0.1)


Open = Callable[[str], Any]


@pytest.fixture
async def lookups(broker: Running, key_server: KeyServer) -> AsyncIterator[Open]:
    made: list[Lookups] = []

    def open_(agency: str) -> Lookups:
        keys = LookupKeyClient(
            broker.deployment.keys_dir, agency, f"127.0.0.1:{key_server.port}", LOOKUP_ID
        )
        made.append(Lookups(broker.node(agency), keys))
        return made[-1]

    yield open_
    for lk in made:
        await lk.keys.close()
        await lk.node.close()


async def publish_red(lk: Lookups, selectors: list[Any], **kw: Any) -> Any:
    return await lk.publish(
        kind="interpol.red", purpose="locate_arrest", sections=SECTIONS, selectors=selectors, **kw
    )


async def hit_notices(lk: Lookups, selector: Any) -> set[str]:
    [r] = await lk.lookup([selector], "border_control", notify=False)
    return {h.notice_id for h in r.hits}


async def test_hit_no_hit_release_notification_and_log_leaf(broker: Running, lookups: Open) -> None:
    fr, border, bka = lookups("FR-NCB"), lookups("IT-BORDER"), lookups("DE-BKA")
    red = await publish_red(fr, [PASSPORT, PERSON])
    stranger = parse_selector("travel_document=IT;P;YA0000000")
    same_passport = parse_selector("travel_document=fr;passport;19 FR-23456")
    same_person = parse_selector("person=Jean Dupont;1981-03-14")

    results = await border.lookup(
        [same_passport, same_person, stranger], "border_control", note="gate B12"
    )
    assert [r.hit for r in results] == [True, True, False]
    hit = results[0].hits[0]
    assert (hit.notice_id, hit.originator, hit.kind) == (red.notice_id, "FR-NCB", "interpol.red")
    assert hit.release == "action"  # the catalogue releases the action to border roles
    assert "arrest" in hit.action
    assert hit.held_version == 1  # IT-BORDER received the notice: it may open it
    assert results[0].notified == (red.notice_id,)

    # Police (DE-BKA) learn the kind but not the action; an agency not holding it: no version.
    [r] = await bka.lookup([same_passport], "investigation", notify=False)
    assert (r.hits[0].release, r.hits[0].kind, r.hits[0].action) == ("kind", "interpol.red", "")

    # The originator got one sealed reply.lookup_hit, with a deadline, naming both selectors.
    got: list[Any] = []
    stop = asyncio.Event()

    async def on_notice(n: Any) -> None:
        if n.header.kind == "reply.lookup_hit":
            got.append(n)
            stop.set()

    await asyncio.wait_for(fr.node.listen(on_notice, stop=stop), 15)
    body = json.loads(got[0].sections["hit"])
    assert body["querier"] == "IT-BORDER"
    assert body["selectors"] == ["travel_document", "person"]
    assert body["note"] == "gate B12"
    assert got[0].header.in_reply_to == red.notice_id
    replies = await fr.node.replies(open_only=True)
    [open_reply] = [x for x in replies.replies if x.kind == "reply.lookup_hit"]
    assert open_reply.respond_by_ms > 0

    # Every lookup is a leaf: querier, token digests, which positions hit.
    forms = [f for s in (same_passport, same_person, stranger) for f in canonical_forms(s)]
    tokens = await border.keys.tokens(forms)

    def visible_lookups(agency: str) -> Callable[[Any], list[Any]]:
        def read(s: Any) -> list[Any]:
            leaves, _next = s.tlog_entries(0, s.tlog_size(), 10_000, agency)
            parsed = [logleaf.parse(b) for _i, b in leaves]
            return [p.lookup for p in parsed if p.WhichOneof("entry") == "lookup"]

        return read

    mine = await broker.app.runner.call(visible_lookups("IT-BORDER"))  # the querier's own
    entry = next(e for e in mine if e.querier == "IT-BORDER" and e.hit_indexes)
    theirs = await broker.app.runner.call(visible_lookups("FR-NCB"))  # the originator hit
    assert entry in theirs
    assert not [e for e in await broker.app.runner.call(visible_lookups("EU-HUB"))]
    assert list(entry.token_digests) == [hashlib.sha256(t).digest() for t in tokens]
    assert set(entry.hit_indexes) == {0, 1}  # the passport, and the person (one variant)
    assert set(entry.hit_notices) == {red.notice_id}
    assert entry.purpose == "border_control"


async def test_a_hit_notification_needs_a_hit(broker: Running, lookups: Open) -> None:
    fr, hub = lookups("FR-NCB"), lookups("EU-HUB")
    red = await publish_red(fr, [PASSPORT])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await hub.node.reply(
            "reply.lookup_hit",
            red.notice_id,
            {"hit": b"{}"},
            to="FR-NCB",
            purpose="locate_arrest",
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_index_follows_versions_withdrawal_and_expiry(broker: Running, lookups: Open) -> None:
    fr, border = lookups("FR-NCB"), lookups("IT-BORDER")
    other = parse_selector("travel_document=FR;P;20FR99999")
    v1 = await publish_red(fr, [PASSPORT])
    assert await hit_notices(border, PASSPORT) == {v1.notice_id}

    # A new version replaces the tokens: the old passport no longer hits, the new one does.
    await publish_red(fr, [other], notice_id=v1.notice_id, version=2)
    assert await hit_notices(border, PASSPORT) == set()
    assert await hit_notices(border, other) == {v1.notice_id}
    stored = await broker.app.runner.call(lambda s: s.indexed_tokens(v1.notice_id))
    assert stored == sorted(await border.keys.tokens(list(canonical_forms(other))))

    # Withdrawal drops them.
    await fr.node.withdraw(v1.notice_id, "found")
    assert await hit_notices(border, other) == set()
    assert await broker.app.runner.call(lambda s: s.indexed_tokens(v1.notice_id)) == []

    # Expiry drops them.
    short = await publish_red(fr, [PASSPORT], expires_in_ms=1500)
    assert await hit_notices(border, PASSPORT) == {short.notice_id}

    async def dropped() -> None:
        while await broker.app.runner.call(lambda s: s.indexed_tokens(short.notice_id)):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(dropped(), 15)
    assert await hit_notices(border, PASSPORT) == set()
    assert await broker.app.runner.call(lambda s: s.index_size()) == 0


async def test_tokens_must_match_the_signed_header(
    broker: Running, lookups: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.client import publisher as node_module  # where the SDK seals

    fr = lookups("FR-NCB")
    real = node_module.lookup.seal_index

    def forged(tokens: Any, rng: Any) -> Any:
        salt, sorted_tokens, digest = real(tokens, rng)
        return salt, sorted_tokens, hashlib.sha256(digest).digest()  # commits to other tokens

    monkeypatch.setattr(node_module.lookup, "seal_index", forged)
    before = broker.count("notices")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish_red(fr, [PASSPORT])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lookup_digest" in (info.value.details() or "")
    assert broker.count("notices") == before
    assert broker.count("lookup_tokens") == 0


async def test_selectors_must_be_declared_for_the_kind(broker: Running, lookups: Open) -> None:
    fr = lookups("FR-NCB")
    with pytest.raises(Exception, match="not searchable by vin"):
        await publish_red(fr, [parse_selector("vin=1HGCM82633A004352")])


async def test_a_lookup_names_a_catalogue_purpose(broker: Running, lookups: Open) -> None:
    border = lookups("IT-BORDER")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await border.lookup([PASSPORT], "curiosity")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "use one of" in (info.value.details() or "")


# -- the lookup-key service over real mutual TLS -----------------------------------------------


@asynccontextmanager
async def stub_as(
    broker: Running, server: KeyServer, party: Party | None
) -> AsyncIterator[lookup_pb2_grpc.LookupKeyServiceStub]:
    ca = (broker.deployment.keys_dir / "ca" / "ca.pem").read_bytes()
    if party is None:
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        from broker import pki

        files = pki.load_party(broker.deployment.keys_dir, party)
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=files.key.read_bytes(),
            certificate_chain=files.cert.read_bytes(),
        )
    channel = grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds)
    try:
        yield lookup_pb2_grpc.LookupKeyServiceStub(channel)
    finally:
        await channel.close()


def _blinded(n: int) -> list[bytes]:
    scalar = oprf.scalar_of(7)
    return [oprf.blind(b"x%d" % i, scalar, oprf.MODE_VOPRF) for i in range(n)]


async def test_only_agencies_may_evaluate(broker: Running, key_server: KeyServer) -> None:
    request = lookup_pb2.EvaluateRequest(blinded_elements=_blinded(2))
    for party in (Party("broker", "broker"), Party("auditor", AUDITOR_ID)):
        async with stub_as(broker, key_server, party) as stub:
            assert (await stub.GetKey(lookup_pb2.GetLookupKeyRequest())).key  # public
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Evaluate(request)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with stub_as(broker, key_server, Party("agency", "FR-NCB")) as stub:
        resp = await stub.Evaluate(request)
        assert len(resp.evaluated_elements) == 2 and len(resp.proof) == 64
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Evaluate(lookup_pb2.EvaluateRequest(blinded_elements=[bytes(32)]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with stub_as(broker, key_server, None) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetKey(lookup_pb2.GetLookupKeyRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # refused in the handshake
    counts = key_server.service.counts.all()
    assert [(a, e) for a, _d, _b, e in counts] == [("FR-NCB", 2)]


async def test_rate_limit_per_agency(broker: Running, deployment: Deployment) -> None:
    clock = [1000.0]
    server = KeyServer(
        KeyServiceConfig(
            LOOKUP_ID,
            deployment.keys_dir,
            deployment.root / "lookup-limited",
            listen="127.0.0.1:0",
            rate=1,
            burst=3,
        ),
        clock=lambda: clock[0],
    )
    await server.start()
    try:
        async with stub_as(broker, server, Party("agency", "FR-NCB")) as fr:
            await fr.Evaluate(lookup_pb2.EvaluateRequest(blinded_elements=_blinded(3)))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await fr.Evaluate(lookup_pb2.EvaluateRequest(blinded_elements=_blinded(1)))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            async with stub_as(broker, server, Party("agency", "DE-BKA")) as bka:
                await bka.Evaluate(lookup_pb2.EvaluateRequest(blinded_elements=_blinded(1)))
            clock[0] += 1.0  # one element's worth of budget comes back
            await fr.Evaluate(lookup_pb2.EvaluateRequest(blinded_elements=_blinded(1)))
        totals = {a: e for a, _d, _b, e in server.service.counts.all()}
        assert totals == {"FR-NCB": 4, "DE-BKA": 1}  # refused batches are not counted
    finally:
        await server.stop(0.1)


def test_rate_limiter_refills_and_never_exceeds_the_burst() -> None:
    t = [0.0]
    limiter = RateLimiter(rate=10, burst=5, clock=lambda: t[0])
    limiter.take("A", 5)
    with pytest.raises(ResourceExhausted):
        limiter.take("A", 1)
    t[0] = 100.0
    limiter.take("A", 5)  # refilled, but only up to the burst
    with pytest.raises(ResourceExhausted):
        limiter.take("A", 1)


async def test_a_service_evaluating_with_another_key_is_caught(
    broker: Running, lookups: Open, key_server: KeyServer
) -> None:
    border = lookups("IT-BORDER")
    key_server.service.secret = oprf.scalar_of(424242)  # not the key the CA signed
    with pytest.raises(oprf.ProofError):
        await border.lookup([PASSPORT], "border_control")


# -- a threshold of lookup-key holders ----------------------------------------------------------


async def test_two_of_three_holders(broker: Running, deployment: Deployment) -> None:
    from broker import lookup_keys, pki
    from broker.client.lookup import ThresholdKeyClient
    from broker.errors import Unavailable

    ids = ["oprf-1", "oprf-2", "oprf-3"]
    for sid in ids:
        pki.issue_certificate(deployment.keys_dir, Party("lookup", sid))
    lookup_keys.deal_shares(deployment.keys_dir, ids, 2)
    servers = [
        KeyServer(KeyServiceConfig(sid, deployment.keys_dir, deployment.root / sid, "127.0.0.1:0"))
        for sid in ids
    ]
    for s in servers:
        await s.start()
    holders = [(f"127.0.0.1:{s.port}", sid) for s, sid in zip(servers, ids, strict=True)]
    made: list[Lookups] = []

    def open_(agency: str, chosen: list[tuple[str, str]] | None = None) -> Lookups:
        keys = ThresholdKeyClient(deployment.keys_dir, agency, chosen or holders)
        made.append(Lookups(broker.node(agency), keys))
        return made[-1]

    try:
        fr, border = open_("FR-NCB"), open_("IT-BORDER")
        red = await publish_red(fr, [PASSPORT])
        assert await hit_notices(border, PASSPORT) == {red.notice_id}
        # Any two holders give the same tokens.
        late = open_("IT-BORDER", holders[1:])
        assert await hit_notices(late, PASSPORT) == {red.notice_id}
        # A dishonest holder is caught by its proof and left out.
        servers[0].service.secret = oprf.scalar_of(99)
        assert await hit_notices(border, PASSPORT) == {red.notice_id}
        # One holder alone cannot evaluate: its share is not the key.
        alone = LookupKeyClient(deployment.keys_dir, "IT-BORDER", holders[2][0], ids[2])
        alone_tokens = await alone.tokens(list(canonical_forms(PASSPORT)))
        await alone.close()
        assert alone_tokens != await border.keys.tokens(list(canonical_forms(PASSPORT)))
        # Down to one honest holder: refused.
        await servers[1].stop(0.1)
        with pytest.raises(Unavailable, match="only 1 of the 2"):
            await border.lookup([PASSPORT], "border_control")
    finally:
        for lk in made:
            await lk.keys.close()
            await lk.node.close()
        for s in servers:
            await s.stop(0.1)


async def test_a_substituted_lookup_key_is_refused(
    broker: Running, lookups: Open, key_server: KeyServer
) -> None:
    """Whoever answers as the key service (a broker in the middle, say) must present the
    CA-signed key of the service the node asked for, or the node evaluates nothing."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from broker.core.identity import IdentityError
    from broker.core.lookup import lookup_key_signing_input

    real = key_server.service.signed
    statement = lookup_pb2.LookupKey.FromString(real.key)
    rogue = ec.generate_private_key(ec.SECP256R1())
    statement.public_key = oprf.public_key(oprf.scalar_of(31337))
    forged = statement.SerializeToString()
    key_server.service.signed = lookup_pb2.SignedLookupKey(
        key=forged,
        signature=rogue.sign(lookup_key_signing_input(forged), ec.ECDSA(hashes.SHA256())),
    )
    with pytest.raises(IdentityError, match="not signed by the deployment CA"):
        await lookups("IT-BORDER").lookup([PASSPORT], "border_control")
    # A genuine statement of another service is refused too.
    key_server.service.signed = real
    other = LookupKeyClient(
        broker.deployment.keys_dir, "IT-BORDER", f"127.0.0.1:{key_server.port}", "elsewhere"
    )
    try:
        with pytest.raises(IdentityError, match="not urn:broker:lookup:elsewhere"):
            await other.tokens(["document:FR:P:1"])
    finally:
        await other.close()


async def test_concurrent_lookups_share_evaluations(
    broker: Running, lookups: Open, key_server: KeyServer
) -> None:
    border = lookups("IT-BORDER")
    forms = [f"document:FR:P:{i:09d}" for i in range(20)]
    alone = [await border.keys.tokens([f]) for f in forms[:3]]
    before = {a: b for a, _d, b, _e in key_server.service.counts.all()}.get("IT-BORDER", 0)
    together = await asyncio.gather(*(border.keys.tokens([f]) for f in forms))
    assert together[:3] == alone  # the same tokens, batched or not
    assert len({t for [t] in together}) == 20
    batches = {a: b for a, _d, b, _e in key_server.service.counts.all()}["IT-BORDER"] - before
    assert batches < 20  # coalesced into fewer Evaluate calls
    # A failing batch fails every caller in it, and the next calls still work.
    key_server.service.secret = oprf.scalar_of(5)
    results = await asyncio.gather(
        *(border.keys.tokens([f]) for f in forms[:4]), return_exceptions=True
    )
    assert all(isinstance(r, oprf.ProofError) for r in results)


async def test_a_suspended_agency_may_not_look_up(broker: Running, lookups: Open) -> None:
    from broker.client.admin import AdminClient
    from broker.sandbox import ADMIN_ID

    async with AdminClient(broker.deployment.keys_dir, ADMIN_ID, broker.target) as admin:
        await admin.set_status("EU-HUB", "suspended", "audit")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lookups("EU-HUB").lookup([PASSPORT], "investigation")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert broker.count("lookup_hits") == 0
