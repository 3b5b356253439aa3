"""Lookups in the SDK: selectors -> tokens (with the lookup-key service), indexing at
publish, hit/no-hit queries and sealed hit notifications.

``LookupKeyClient`` talks to the lookup-key service over mutual TLS: it fetches
the service's CA-signed key once, blinds each canonical form with a fresh
random scalar, sends only blinded elements, verifies the DLEQ proof against the
signed key and finalizes (RFC 9497 VOPRF). ``Lookups`` puts that together with
an :class:`~broker.client.node.AgencyNode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker import pki
from broker.client.types import PublishedNotice, now_ms
from broker.core import lookup, oprf, threshold
from broker.core.identity import IdentityError, Party
from broker.core.policy import Bundle
from broker.core.selectors import Selector, canonical_forms, oprf_input
from broker.errors import InvalidArgument, Unavailable
from broker.v1 import agency_pb2, lookup_pb2, lookup_pb2_grpc

if TYPE_CHECKING:
    from broker.client.node import AgencyNode


def _blind_all(inputs: Sequence[bytes], blinds: Sequence[bytes]) -> list[bytes]:
    return [oprf.blind(i, b, oprf.MODE_VOPRF) for i, b in zip(inputs, blinds, strict=True)]


class LookupKeyClient:
    """An agency's connection to the lookup-key service ``urn:broker:lookup:<service_id>``."""

    def __init__(
        self,
        keys_dir: Path,
        agency_id: str,
        address: str,
        service_id: str = "oprf",
        *,
        rpc_timeout_s: float = 10.0,
    ) -> None:
        self.service = Party("lookup", service_id)
        files = pki.load_party(keys_dir, Party("agency", agency_id))
        ca_key = pki.load_ca_certificate(files.ca_cert).public_key()
        if not isinstance(ca_key, EllipticCurvePublicKey):
            raise InvalidArgument("the deployment CA must use an EC P-256 key")
        self.ca_key = ca_key
        creds = grpc.ssl_channel_credentials(
            root_certificates=files.ca_cert.read_bytes(),
            private_key=files.key.read_bytes(),
            certificate_chain=files.cert.read_bytes(),
        )
        self.channel = grpc.aio.secure_channel(address, creds)
        self.stub = lookup_pb2_grpc.LookupKeyServiceStub(self.channel)
        self.timeout = rpc_timeout_s
        self._key: lookup_pb2.LookupKey | None = None
        self._pending: list[tuple[list[str], asyncio.Future[list[bytes]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.channel.close()

    async def key(self) -> lookup_pb2.LookupKey:
        """The service's public key, verified against the CA (fetched once)."""
        if self._key is None or not now_ms() < self._key.not_after_ms:
            signed = await self.stub.GetKey(lookup_pb2.GetLookupKeyRequest(), timeout=self.timeout)
            self._key = lookup.verify_lookup_key(signed, self.ca_key, self.service, now_ms())
        return self._key

    async def tokens(self, forms: Sequence[str]) -> list[bytes]:
        """The index token of each canonical form, in order.

        Concurrent calls are coalesced: while one Evaluate is in flight, the forms of
        every caller that arrives wait and go out together in the next one (up to
        MAX_EVALUATE), so a busy node pays the round trip and the per-batch proof work
        once for many lookups, and an idle one adds no delay.

        Raises ProofError when the service's proof does not verify against its
        CA-signed key (the service, or someone between, is not honest).
        """
        if not forms:
            return []
        if len(forms) > lookup.MAX_EVALUATE:  # a long list goes out alone, in chunks
            out: list[bytes] = []
            for start in range(0, len(forms), lookup.MAX_EVALUATE):
                out += await self._evaluate(list(forms[start : start + lookup.MAX_EVALUATE]))
            return out
        future: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(forms), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # callers scheduled in this turn join the first batch
        while self._pending:
            batch: list[tuple[list[str], asyncio.Future[list[bytes]]]] = []
            size = 0
            while self._pending and size + len(self._pending[0][0]) <= lookup.MAX_EVALUATE:
                item = self._pending.pop(0)
                batch.append(item)
                size += len(item[0])
            try:
                tokens = await self._evaluate([f for forms, _f in batch for f in forms])
            except BaseException as exc:
                for _forms, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            at = 0
            for forms, future in batch:
                if not future.done():
                    future.set_result(tokens[at : at + len(forms)])
                at += len(forms)

    async def _evaluate(self, forms: list[str]) -> list[bytes]:
        key = await self.key()
        inputs = [oprf_input(f) for f in forms]
        blinds = [oprf.random_scalar(os.urandom) for _ in inputs]
        # The group arithmetic runs in libsodium without the GIL: off the event loop.
        blinded = await asyncio.to_thread(_blind_all, inputs, blinds)
        resp = await self.stub.Evaluate(
            lookup_pb2.EvaluateRequest(blinded_elements=blinded), timeout=self.timeout
        )
        if len(resp.evaluated_elements) != len(blinded):
            raise oprf.ProofError("the lookup-key service answered a different batch")
        outputs = await asyncio.to_thread(
            oprf.finalize_verifiable,
            inputs,
            blinds,
            list(resp.evaluated_elements),
            blinded,
            key.public_key,
            resp.proof,
        )
        return [lookup.token_of(o) for o in outputs]


class TokenSource(Protocol):
    """Where tokens come from: one lookup-key service, or a threshold of holders."""

    async def tokens(self, forms: Sequence[str]) -> list[bytes]: ...

    async def close(self) -> None: ...


class ThresholdKeyClient:
    """Tokens from any ``t`` of ``n`` lookup-key holders (broker/core/threshold.py).

    The same blinded elements go to every holder; the first ``t`` answers whose DLEQ
    proofs verify against their own CA-signed public shares are combined (the shares
    must interpolate to the group key). Holders that are down, slow or dishonest are
    left out; fewer than ``t`` good answers raise Unavailable.
    """

    def __init__(
        self,
        keys_dir: Path,
        agency_id: str,
        holders: Sequence[tuple[str, str]],
        *,
        rpc_timeout_s: float = 10.0,
    ) -> None:
        self.holders = [
            LookupKeyClient(keys_dir, agency_id, address, sid, rpc_timeout_s=rpc_timeout_s)
            for address, sid in holders
        ]

    async def close(self) -> None:
        for h in self.holders:
            await h.close()

    async def _keys(self) -> list[tuple[LookupKeyClient, lookup_pb2.LookupKey]]:
        got = await asyncio.gather(*(h.key() for h in self.holders), return_exceptions=True)
        keys = [
            (h, k)
            for h, k in zip(self.holders, got, strict=True)
            if not isinstance(k, BaseException)
        ]
        if not keys:
            raise Unavailable("no lookup-key holder answered")
        first = keys[0][1]
        for _h, k in keys:
            if not k.share_index or (k.threshold, k.holders, k.group_public_key) != (
                first.threshold,
                first.holders,
                first.group_public_key,
            ):
                raise IdentityError(f"{k.service} is not a holder of the same threshold key")
        return keys

    async def tokens(self, forms: Sequence[str]) -> list[bytes]:
        keys = await self._keys()
        t = keys[0][1].threshold
        inputs = [oprf_input(f) for f in forms]
        if len(inputs) > lookup.MAX_EVALUATE:
            raise InvalidArgument(f"at most {lookup.MAX_EVALUATE} forms at once")
        blinds = [oprf.random_scalar(os.urandom) for _ in inputs]
        blinded = await asyncio.to_thread(_blind_all, inputs, blinds)
        request = lookup_pb2.EvaluateRequest(blinded_elements=blinded)
        answers = await asyncio.gather(
            *(h.stub.Evaluate(request, timeout=h.timeout) for h, _k in keys),
            return_exceptions=True,
        )
        good: dict[int, list[bytes]] = {}
        public: dict[int, bytes] = {}
        for (_h, key), answer in zip(keys, answers, strict=True):
            if isinstance(answer, BaseException) or len(good) == t:
                continue
            evaluated = list(answer.evaluated_elements)
            try:
                await asyncio.to_thread(
                    oprf.verify_proof,
                    oprf.GENERATOR,
                    key.public_key,
                    blinded,
                    evaluated,
                    answer.proof,
                    oprf.MODE_VOPRF,
                )
            except oprf.OprfError:
                continue  # a dishonest or broken holder: use another
            good[key.share_index] = evaluated
            public[key.share_index] = key.public_key
        if len(good) < t:
            raise Unavailable(f"only {len(good)} of the {t} lookup-key holders needed answered")
        threshold.combine_public(public, keys[0][1].group_public_key)
        combined = threshold.combine_evaluations(
            [{i: good[i][n] for i in good} for n in range(len(inputs))]
        )
        return [
            lookup.token_of(oprf.finalize(i, b, z))
            for i, b, z in zip(inputs, blinds, combined, strict=True)
        ]


@dataclass(frozen=True)
class SelectorResult:
    """The answer for one selector: hit when any of its variants hit."""

    selector: Selector
    forms: tuple[str, ...]
    hits: tuple[lookup_pb2.LookupHit, ...] = ()
    notified: tuple[str, ...] = ()  # notice ids whose originator got a hit notification

    @property
    def hit(self) -> bool:
        return bool(self.hits)

    def to_json(self) -> dict[str, Any]:
        return {
            "selector": self.selector.type,
            "hit": self.hit,
            "hits": [
                {
                    "originator": h.originator,
                    "notice_id": h.notice_id,
                    "release": h.release,
                    "kind": h.kind,
                    "action": h.action,
                    "held_version": h.held_version,
                    "respond_within_hours": h.respond_within_ms // lookup.HOUR_MS,
                }
                for h in self.hits
            ],
            "notified": list(self.notified),
        }


@dataclass
class Lookups:
    """Lookups for one agency node."""

    node: AgencyNode
    keys: TokenSource  # a LookupKeyClient, or a ThresholdKeyClient
    _bundles: dict[str, Bundle] = field(default_factory=dict)

    async def _bundle(self) -> Bundle:
        active = await self.node._retry(
            self.node.stub.GetActivePolicy, agency_pb2.GetActivePolicyRequest()
        )
        if active.version in self._bundles:
            return self._bundles[active.version]
        bundle = await self.node.signed_policy(active.version)
        self._bundles[active.version] = bundle
        return bundle

    async def index_tokens(self, kind: str, selectors: Collection[Selector]) -> list[bytes]:
        """The tokens to index a notice of ``kind`` by; the catalogue must declare each
        selector's type for the kind (InvalidArgument says which are)."""
        if not selectors:
            return []
        spec = (await self._bundle()).catalogue.lookups.get(kind)
        allowed = spec.selectors if spec else ()
        for s in selectors:
            if s.type not in allowed:
                raise InvalidArgument(
                    f"{kind} is not searchable by {s.type}: "
                    + (f"use {', '.join(allowed)}" if allowed else "the catalogue declares none")
                )
        forms = sorted({f for s in selectors for f in canonical_forms(s)})
        return await self.keys.tokens(forms)

    async def publish(
        self, *, kind: str, selectors: Collection[Selector] = (), **kwargs: Any
    ) -> PublishedNotice:
        """AgencyNode.publish, indexed by ``selectors`` (every canonical variant)."""
        tokens = await self.index_tokens(kind, selectors)
        return await self.node.publish(kind=kind, index_tokens=tokens, **kwargs)

    async def lookup(
        self,
        selectors: Sequence[Selector],
        purpose: str,
        *,
        note: str = "",
        notify: bool = True,
    ) -> list[SelectorResult]:
        """Hit or no-hit for each selector; on a hit, tell the originator (a sealed
        reply.lookup_hit it must answer by the kind's deadline) unless ``notify`` is off."""
        forms = [canonical_forms(s) for s in selectors]
        flat = [f for fs in forms for f in fs]
        tokens = await self.keys.tokens(flat)
        resp: lookup_pb2.LookupResponse = await self.node._retry(
            self.node.stub.Lookup, lookup_pb2.LookupRequest(tokens=tokens, purpose=purpose)
        )
        if len(resp.results) != len(tokens):
            raise InvalidArgument("the broker answered a different number of tokens")
        results = []
        position = 0
        by_notice: dict[str, tuple[lookup_pb2.LookupHit, list[str]]] = {}
        for selector, fs in zip(selectors, forms, strict=True):
            seen: dict[str, lookup_pb2.LookupHit] = {}
            for r in resp.results[position : position + len(fs)]:
                for h in r.hits:
                    seen.setdefault(h.notice_id, h)
            position += len(fs)
            for notice_id, h in seen.items():
                types = by_notice.setdefault(notice_id, (h, []))[1]
                if selector.type not in types:
                    types.append(selector.type)
            results.append(SelectorResult(selector, fs, tuple(seen.values())))
        notified: set[str] = set()
        if notify:  # one sealed notification per notice hit, naming the selector types
            for notice_id, (h, types) in by_notice.items():
                await self._notify(h, types, purpose, note, resp.log_index)
                notified.add(notice_id)
        return [
            dataclasses.replace(
                r, notified=tuple(h.notice_id for h in r.hits if h.notice_id in notified)
            )
            for r in results
        ]

    async def _notify(
        self,
        hit: lookup_pb2.LookupHit,
        selector_types: Sequence[str],
        purpose: str,
        note: str,
        index: int,
    ) -> None:
        body: Mapping[str, Any] = {
            "querier": self.node.me,
            "at_ms": now_ms(),
            "selectors": list(selector_types),
            "purpose": purpose,
            "note": note,
            "log_index": index,
        }
        await self.node.reply(
            lookup.HIT_KIND,
            hit.notice_id,
            {"hit": json.dumps(body, sort_keys=True).encode()},
            to=hit.originator,
            respond_within_ms=hit.respond_within_ms,
            purpose=hit.purpose,  # the notice's: purpose limitation binds the originator
        )
