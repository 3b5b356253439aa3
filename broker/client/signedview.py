"""The node's signed view: the administrator-signed policy and the verified key directory.

:class:`SignedView` (a base of NodePublisher, so mixed into AgencyNode) fetches the
active bundle and checks it against its administrator-signed activation, never
accepting an older activation sequence than one seen (durable memory, so not across
restarts either); and fetches the key directory, accepting each agency only with a
proof that its entry is the current value in the key directory a checkpoint commits
to (that checkpoint verified by the node's LogView), its administrator-signed
registry entry unexpired, its CA-signed key statement of the serial the entry names,
and revisions and key serials never going back. It also re-checks a
ResolveAudience answer under that policy and registry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from cryptography import x509
from google.protobuf.message import DecodeError

from broker.client.directory import Member, Verified, View, profile_of
from broker.client.logview import LogView
from broker.client.memory import KEY_SERIAL, POLICY, REVISION, TrustMemory
from broker.client.statedb import transaction
from broker.client.types import now_ms
from broker.core import activation as act
from broker.core import keymap, relay
from broker.core.identity import IdentityError, Party
from broker.core.policy import AgencyProfile, Bundle, compile_bundle
from broker.errors import PermissionDenied, Unavailable
from broker.trustconfig import TrustConfig
from broker.v1 import admin_pb2, agency_pb2, notice_pb2

log = logging.getLogger("broker.client")


class SignedView:
    """The signed policy and the verified key directory of an AgencyNode."""

    ca_cert: x509.Certificate
    revoked: frozenset[str]
    stub: Any
    memory: TrustMemory
    log_view: LogView
    trust_config: TrustConfig
    verified: Verified
    _policies: dict[str, tuple[Bundle, int]]
    _view: View | None
    _view_stale: bool
    _view_at: float
    _view_lock: asyncio.Lock
    _retry: Callable[..., Any]  # NodePublisher._retry

    # -- the signed policy and directory -------------------------------------------------
    async def signed_policy(self, version: str) -> Bundle:
        """The active bundle, verified against its administrator-signed activation.

        The node remembers the highest activation sequence it has seen and refuses an
        older activation: a broker cannot roll it back to a once-valid, laxer bundle.
        """
        cached = self._policies.get(version)
        if cached is not None and cached[1] == self.memory.newest(POLICY):
            return cached[0]
        active = await self._retry(self.stub.GetActivePolicy, agency_pb2.GetActivePolicyRequest())
        if active.version != version:
            raise Unavailable("the broker's policy changed while resolving the audience; retry")
        if not active.activation.activation:
            raise PermissionDenied(
                "the broker runs an unsigned bootstrap policy: an administrator must activate a "
                "signed bundle (broker admin policy activate) before audiences can be checked"
            )
        verified = act.verify_activation(
            active.activation, self.ca_cert, now_ms(), expected_version=version
        )
        sequence = verified.activation.sequence
        self.memory.check(POLICY, "", sequence)  # durable: no rollback across restarts either
        bundle = cached[0] if cached else compile_bundle(act.bundle_files(active.bundle))
        if bundle.version != version:
            raise PermissionDenied("the broker served a bundle that is not the activated version")
        self.memory.accept(POLICY, "", sequence)
        self._policies[version] = (bundle, sequence)
        return bundle

    async def directory(self, *, refresh: bool = False) -> View:
        """The verified key directory and the signed policy it is decided under; fetched
        again when the broker reported another one (or `refresh`).

        Every entry must come with a proof that it is the agency's current value in the
        key directory whose root a checkpoint commits to, that checkpoint verified by
        the node's LogView (log key, k witness cosignatures, consistent with the last one
        the node verified). Revisions and key serials never go back (durable memory).
        """
        async with self._view_lock:
            view = self._view
            if view is not None and not (refresh or self._view_stale):
                return view
            known = view.digest if view is not None else ""
            got: agency_pb2.Directory = await self._retry(
                self.stub.GetDirectory,
                agency_pb2.GetDirectoryRequest(
                    known_digest=known,
                    known_size=self.log_view.head[0],
                    min_cosignatures=self.trust_config.min_cosignatures,
                ),
            )
            policy = await self.signed_policy(got.policy_version)
            if got.unchanged and view is not None:
                view = View(view.digest, policy, view.members, view.profiles, view.excluded)
            else:
                with transaction(self.memory.conn):  # what it accepts, remembered at once
                    view = self._verify_directory(got, policy)
            self._view = view
            self._view_stale = False
            self._view_at = time.monotonic()
            return view

    def _verify_directory(self, directory: agency_pb2.Directory, policy: Bundle) -> View:
        checkpoint = self.log_view.accept(directory.checkpoint.note, directory.consistency)
        root = keymap.root_from_extensions(checkpoint.checkpoint.extensions)
        if root is None:
            raise PermissionDenied(
                f"checkpoint {checkpoint.checkpoint.size} commits to no key directory: "
                "refusing every key the broker serves"
            )
        now = now_ms()
        members: dict[str, Member] = {}
        excluded: dict[str, str] = {}
        for item in directory.agencies:
            member, why = self._verify_member(item, root, now)
            if member is not None:
                members[member.entry.id] = member
            elif why is not None:
                excluded[why[0]] = why[1]
        profiles = tuple(m.profile for _id, m in sorted(members.items()))
        return View(directory.digest, policy, members, profiles, excluded)

    def _verify_member(
        self, item: agency_pb2.DirectoryEntry, root: bytes, now: int
    ) -> tuple[Member | None, tuple[str, str] | None]:
        """(member, None), or (None, (agency, why this node leaves it out)), or (None, None)
        for an entry no administrator signed (as if the broker never sent it)."""
        try:
            signed = admin_pb2.SignedAgencyEntry.FromString(item.signed_entry)
            statement = notice_pb2.SignedKeyStatement.FromString(item.key_statement)
            entry = self.verified.entry(signed, now).entry
        except (act.ActivationError, DecodeError) as exc:
            log.warning("directory entry refused", extra={"error": str(exc)})
            return None, None
        agency = entry.id
        try:
            keymap.verify(
                agency,
                keymap.map_value(item.signed_entry, item.key_statement),
                item.map_proof,
                root,
            )
        except keymap.MapProofError as exc:
            return None, (agency, str(exc))
        if not entry.not_after_ms or now > entry.not_after_ms:
            return None, (
                agency,
                f"{agency}'s signed registry entry has expired (or was signed to never "
                "expire): an administrator must renew it (broker admin agency sign-registry "
                "--renew)",
            )
        try:
            keys = self.verified.statement(statement, now, agency)
        except IdentityError as exc:
            return None, (agency, f"no usable CA-signed key ({exc})")
        if entry.key_serial != keys.serial:
            return None, (
                agency,
                f"the broker's registry entry for {agency} names key serial "
                f"{entry.key_serial}, its key statement serial {keys.serial}",
            )
        if Party("agency", agency).uri() in self.revoked:
            return None, (agency, f"{agency} is revoked (revoked.txt)")
        try:
            self.memory.accept(REVISION, agency, entry.revision)
            self.memory.accept(KEY_SERIAL, agency, keys.serial)
        except PermissionDenied as exc:
            return None, (agency, str(exc))
        return Member(profile_of(entry), keys, entry, statement, signed), None

    # -- asking the broker (explanations; not used to seal) --------------------------------
    async def resolve_audience(
        self,
        draft: notice_pb2.NoticeHeader,
        restrictions: notice_pb2.OriginatorRestrictions,
        sections: Collection[str],
    ) -> agency_pb2.ResolveAudienceResponse:
        """Ask the broker who may read which sections of a draft."""
        req = agency_pb2.ResolveAudienceRequest(
            draft=draft, restrictions=restrictions, sections=sorted(sections)
        )
        response: agency_pb2.ResolveAudienceResponse = await self._retry(
            self.stub.ResolveAudience, req
        )
        return response

    async def check_audience(
        self,
        header: notice_pb2.NoticeHeader,
        restrictions: notice_pb2.OriginatorRestrictions,
        sections: Collection[str],
        audience: agency_pb2.ResolveAudienceResponse,
    ) -> None:
        """Re-evaluate a ResolveAudience answer under the signed policy and registry.

        Raises PermissionDenied if the broker offered any recipient a section that the
        administrator-signed policy, applied to the administrator-signed registry entry,
        does not allow.
        """
        policy = await self.signed_policy(audience.policy_version)
        facts = relay.facts_of(header, restrictions, sorted(sections))
        now = now_ms()
        for m in audience.members:
            if not m.entry.entry:
                raise PermissionDenied(
                    f"the broker offered {m.agency_id} without an administrator-signed registry "
                    "entry (broker admin agency sign-registry)"
                )
            entry = self.verified.entry(m.entry, now).entry
            serial = notice_pb2.KeyStatement.FromString(m.key_statement.statement).serial
            if entry.id != m.agency_id or entry.key_serial != serial:
                raise PermissionDenied(
                    f"the broker's registry entry for {m.agency_id} does not match its keys"
                )
            profile: AgencyProfile = profile_of(entry)
            allowed = policy.decide(facts, profile, now_ms=now).allowed_sections
            extra = sorted(set(m.sections) - allowed)
            if extra:
                raise PermissionDenied(
                    f"the broker offered {m.agency_id} section(s) {', '.join(extra)} that the "
                    f"signed policy {policy.version[:12]} does not allow; nothing was sealed"
                )
