"""Live revocation (issue 10, item 3): revoking an agency takes effect on a running broker
at once, by the CA's list or by an administrator's signed registry entry: its stream is
closed with UNAUTHENTICATED, its calls refused, its queued deliveries withheld and each
originator told, and a PartyRevoked leaf is logged. No restart."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from broker import pki
from broker.client.admin import AdminClient
from broker.core import logleaf
from broker.core.identity import Party
from broker.errors import PermissionDenied
from broker.v1 import agency_pb2
from tests.adversarial.kit import agencies, publish, until

from .conftest import Running

pytestmark = pytest.mark.integration


async def revoked_leaves(b: Running) -> list[tuple[str, str, int]]:
    def read(store: object) -> list[bytes]:
        conn = store.conn  # type: ignore[attr-defined]
        return [bytes(r[0]) for r in conn.execute("SELECT leaf FROM tlog_leaves ORDER BY idx")]

    leaves = [logleaf.parse(d) for d in await b.app.runner.call(read)]
    return [
        (leaf.revoked.party, leaf.revoked.by, leaf.revoked.withheld)
        for leaf in leaves
        if leaf.WhichOneof("entry") == "revoked"
    ]


async def test_the_cas_list_revokes_a_connected_agency_at_once(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr, de = a["FR-NCB"], a["DE-BKA"]
        first = await publish(fr.node, ["DE-BKA", "IT-BORDER"])
        await until(lambda: de.versions(first) == [1])
        # IT-BORDER is offline: its copy is queued. The CA revokes it and DE-BKA.
        pki.revoke(broker.deployment.keys_dir, Party("agency", "IT-BORDER"))
        pki.revoke(broker.deployment.keys_dir, Party("agency", "DE-BKA"))

        # DE-BKA's open stream is closed with a status that says why.
        assert de.task is not None
        await until(lambda: de.task is not None and de.task.done())
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            await de.task
        assert closed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in str(closed.value.details())
        de.task = None  # (already ended)

        # IT-BORDER's queued copy is withheld and the originator told.
        await until(
            lambda: any(
                e.kind == agency_pb2.EVENT_KIND_WITHHELD and e.recipient == "IT-BORDER"
                for e in fr.events
            )
        )
        status = await fr.node.delivery_status(first)
        states = {r.recipient: r.state for r in status.recipients}
        assert states["IT-BORDER"] == agency_pb2.DELIVERY_STATE_WITHHELD
        assert states["DE-BKA"] == agency_pb2.DELIVERY_STATE_DELIVERED

        # Its calls are refused; nothing new is queued for either.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await publish(de.node, ["FR-NCB"])
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with broker.node("FR-NCB") as fresh:  # a view read after the revocation
            with pytest.raises(PermissionDenied, match=r"will not seal for DE-BKA.*IT-BORDER"):
                await publish(fresh, ["DE-BKA", "IT-BORDER", "EU-HUB"])

    logged = await revoked_leaves(broker)
    assert ("urn:broker:agency:IT-BORDER", "ca", 1) in logged
    assert ("urn:broker:agency:DE-BKA", "ca", 0) in logged


async def test_an_administrators_signed_revocation_applies_at_once(broker: Running) -> None:
    pki.issue_certificate(broker.deployment.keys_dir, Party("admin", "alice"))
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr, de = a["FR-NCB"], a["DE-BKA"]
        notice = await publish(fr.node, ["DE-BKA", "IT-BORDER"])
        await until(lambda: de.versions(notice) == [1])
        async with AdminClient(broker.deployment.keys_dir, "alice", broker.target) as admin:
            await admin.set_status("DE-BKA", "revoked", "credentials lost")
            await admin.set_status("IT-BORDER", "revoked", "credentials lost")
        await until(lambda: de.task is not None and de.task.done())
        assert de.task is not None
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            await de.task
        assert closed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        de.task = None
        status = await fr.node.delivery_status(notice)
        states = {r.recipient: r.state for r in status.recipients}
        assert states["IT-BORDER"] == agency_pb2.DELIVERY_STATE_WITHHELD
    logged = await revoked_leaves(broker)
    assert ("urn:broker:agency:IT-BORDER", "alice", 1) in logged
    assert any(party.endswith(":DE-BKA") and by == "alice" for party, by, _ in logged)
    await asyncio.sleep(0)
