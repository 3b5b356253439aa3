"""AdminService over real mTLS: who may call it, and what each call does."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from broker import pki
from broker.bundles import read_bundle_dir
from broker.client.admin import AdminClient
from broker.core import activation as act
from broker.core.identity import Party
from broker.sandbox import REPO_POLICIES
from broker.v1 import admin_pb2, admin_pb2_grpc, agency_pb2

from .conftest import Running
from .helpers import RED_SECTIONS, red_header

pytestmark = pytest.mark.integration

EMPTY_REQUESTS = {
    "ValidatePolicy": admin_pb2.ValidatePolicyRequest(),
    "ExplainDecision": admin_pb2.ExplainDecisionRequest(),
    "DiffPolicy": admin_pb2.DiffPolicyRequest(),
    "ActivatePolicy": admin_pb2.ActivatePolicyRequest(),
    "PolicyHistory": admin_pb2.PolicyHistoryRequest(),
    "GetPolicyBundle": admin_pb2.GetPolicyBundleRequest(),
    "RegisterAgency": admin_pb2.RegisterAgencyRequest(),
    "UpdateAgency": admin_pb2.UpdateAgencyRequest(),
    "SetAgencyStatus": admin_pb2.SetAgencyStatusRequest(),
    "RotateAgencyKeys": admin_pb2.RotateAgencyKeysRequest(),
    "ListAgencies": admin_pb2.ListAgenciesRequest(),
    "ListAdminActions": admin_pb2.ListAdminActionsRequest(),
    "ListKeyStatements": admin_pb2.ListKeyStatementsRequest(),
}


def test_every_admin_rpc_is_in_the_matrix() -> None:
    methods = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].methods_by_name
    assert set(methods) == set(EMPTY_REQUESTS)


@pytest.mark.parametrize("party", [Party("agency", "FR-NCB"), Party("auditor", "dpo")])
async def test_agencies_and_auditors_are_refused_every_admin_call(
    broker: Running, party: Party
) -> None:
    if party.kind == "auditor":
        pki.issue_certificate(broker.deployment.keys_dir, party)
    stub = admin_pb2_grpc.AdminServiceStub(broker.channel(party))
    before = broker.count("admin_actions")
    for method, request in EMPTY_REQUESTS.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(stub, method)(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
        assert "not an administrator" in (info.value.details() or "")
    assert broker.count("admin_actions") == before


def admin(b: Running, name: str = "alice") -> AdminClient:
    pki.issue_certificate(b.deployment.keys_dir, Party("admin", name))
    return AdminClient(b.deployment.keys_dir, name, b.target)


def draft_bundle(tmp_path: Path) -> Path:
    d = tmp_path / "draft"
    shutil.copytree(REPO_POLICIES, d)
    return d


async def test_activate_history_and_rollback(broker: Running, tmp_path: Path) -> None:
    bootstrap = broker.app.policy.version
    draft = draft_bundle(tmp_path)
    (draft / "rules" / "zz-extra.toml").write_text(
        '[[rule]]\nid = "extra-test-rule"\neffect = "forbid"\nreason = "test"\nsections = ["dna"]\n'
    )
    async with admin(broker) as a:
        result = await a.activate(read_bundle_dir(draft), "tighten DNA")
        assert broker.app.policy.version == result.version != bootstrap
        assert broker.app.policy_activation is not None
        history = await a.call("PolicyHistory", admin_pb2.PolicyHistoryRequest())
        assert [e.version for e in history.entries][:2] == [result.version, bootstrap]
        assert history.entries[0].active and history.entries[0].admin == "alice"
        back = await a.rollback(bootstrap, "undo")
        assert back.version == bootstrap == broker.app.policy.version
        actions = await a.call("ListAdminActions", admin_pb2.ListAdminActionsRequest())
        assert [x.action for x in actions.actions][:2] == ["policy.activate", "policy.activate"]
        assert actions.actions[0].actor == "alice"


async def test_activation_signed_by_someone_else_or_stale_is_refused(
    broker: Running, tmp_path: Path
) -> None:
    files = read_bundle_dir(draft_bundle(tmp_path))
    from broker.core.policy import compile_bundle

    version = compile_bundle(files).version
    async with admin(broker, "alice") as alice, admin(broker, "bob") as bob:
        seq = await alice.next_sequence()
        signed_by_bob = bob.sign_activation(version, "x", seq)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await alice.call(
                "ActivatePolicy",
                admin_pb2.ActivatePolicyRequest(
                    bundle=act.bundle_message(files), activation=signed_by_bob
                ),
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        stale = alice.sign_activation(version, "x", seq - 1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await alice.call(
                "ActivatePolicy",
                admin_pb2.ActivatePolicyRequest(bundle=act.bundle_message(files), activation=stale),
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        tampered = alice.sign_activation(version, "x", seq)
        tampered.signature = tampered.signature[:-1] + bytes([tampered.signature[-1] ^ 1])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await alice.call(
                "ActivatePolicy",
                admin_pb2.ActivatePolicyRequest(
                    bundle=act.bundle_message(files), activation=tampered
                ),
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_validate_reports_problems(broker: Running, tmp_path: Path) -> None:
    draft = draft_bundle(tmp_path)
    (draft / "rules" / "broken.toml").write_text('[[rule]]\nid = "x"\neffect = \n')
    async with admin(broker) as a:
        resp = await a.call(
            "ValidatePolicy",
            admin_pb2.ValidatePolicyRequest(bundle=act.bundle_message(read_bundle_dir(draft))),
        )
    assert not resp.ok
    assert resp.diagnostics[0].file == "rules/broken.toml"
    assert resp.diagnostics[0].line == 3


async def test_explain_names_rules(broker: Running) -> None:
    async with admin(broker) as a:
        resp = await a.call(
            "ExplainDecision",
            admin_pb2.ExplainDecisionRequest(
                draft=red_header(), sections=sorted(RED_SECTIONS), recipient="IT-BORDER"
            ),
        )
    by_section = {d.section: d for d in resp.decisions}
    assert not by_section["biometrics"].allowed
    assert by_section["biometrics"].rules and by_section["biometrics"].reason


async def test_suspended_agency_receives_nothing_and_diff_shows_the_loss(
    broker: Running, tmp_path: Path
) -> None:
    async with broker.node("FR-NCB") as fr:
        await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
    async with admin(broker) as a:
        await a.set_status("DE-BKA", "suspended", "audit")
        listed = await a.call("ListAgencies", admin_pb2.ListAgenciesRequest())
        assert {e.id: e.status for e in listed.agencies}["DE-BKA"] == "suspended"
        # A draft that forbids everything to border roles loses IT-BORDER's sections.
        draft = draft_bundle(tmp_path)
        (draft / "rules" / "zz-no-border.toml").write_text(
            '[[rule]]\nid = "no-border"\neffect = "forbid"\nreason = "test"\n'
            'recipient_roles = ["border"]\n'
        )
        diff = await a.call(
            "DiffPolicy",
            admin_pb2.DiffPolicyRequest(bundle=act.bundle_message(read_bundle_dir(draft))),
        )
        assert diff.notices == 1 and diff.lost >= 1 and diff.gained == 0
        assert {c.recipient for c in diff.changes} == {"IT-BORDER"}
    async with broker.node("FR-NCB") as fr:
        audience = await fr.resolve_audience(red_header(), fr_restrictions(), sorted(RED_SECTIONS))
    assert "DE-BKA" not in {m.agency_id for m in audience.members}
    refused = {w.agency_id: w for w in audience.withheld if not w.section}
    assert "suspended" in refused["DE-BKA"].reason


def fr_restrictions() -> object:
    from broker.v1 import notice_pb2

    return notice_pb2.OriginatorRestrictions()


async def test_register_and_rotate_keys(broker: Running) -> None:
    keys = broker.deployment.keys_dir
    pki.issue_agency(keys, "NO-KRIPOS")
    statement = pki.load_agency(keys, "NO-KRIPOS").statement
    async with admin(broker) as a:
        resp = await a.register("NO-KRIPOS", "NO", statement, roles=["police"])
        assert resp.agency.status == "active" and resp.agency.key_serial == 1
        assert "NO-KRIPOS" in broker.app.registry
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await a.register("NO-KRIPOS", "NO", statement)
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await a.rotate_keys("NO-KRIPOS", statement)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        pki.issue_agency(keys, "NO-KRIPOS")  # rotation: a new statement, serial 2
        rotated = pki.load_agency(keys, "NO-KRIPOS").statement
        resp = await a.rotate_keys("NO-KRIPOS", rotated)
        assert resp.agency.key_serial == 2 and resp.agency.revision == 2
        # A statement for another agency is refused.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await a.register("SE-NOA", "SE", rotated)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A replayed (stale) signed entry is refused.
        stale = admin_pb2.AgencyEntry()
        stale.CopyFrom(resp.agency)
        stale.status = "suspended"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await a.call(
                "SetAgencyStatus",
                admin_pb2.SetAgencyStatusRequest(entry=a.sign_entry(stale), reason="x"),
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # A status call cannot smuggle in other changes.
        sneaky = admin_pb2.AgencyEntry()
        sneaky.CopyFrom(resp.agency)
        sneaky.revision += 1
        sneaky.status = "suspended"
        sneaky.roles.append("ncb")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await a.call(
                "SetAgencyStatus",
                admin_pb2.SetAgencyStatusRequest(entry=a.sign_entry(sneaky), reason="x"),
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        actions = await a.call("ListAdminActions", admin_pb2.ListAdminActionsRequest(limit=5))
        assert [x.action for x in actions.actions][:2] == ["agency.rotate_keys", "agency.register"]


async def test_node_refuses_an_audience_the_signed_policy_does_not_allow(
    broker: Running,
) -> None:
    # A lying broker: its registry now claims the border unit is a police force, so
    # ResolveAudience offers it biometrics. The administrator-signed entry says border.
    from dataclasses import replace

    lied = broker.app.registry["IT-BORDER"]
    broker.app.registry["IT-BORDER"] = replace(
        lied, profile=replace(lied.profile, roles=frozenset({"police"}))
    )
    async with broker.node("FR-NCB") as fr:
        # The node resolves audiences itself, under the signed policy and entries: the lie
        # changes nothing it seals.
        sent = await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
        assert sent.audience["IT-BORDER"] == ("identity",)
        # Asked explicitly, the broker's answer is checked, and the lie is caught.
        header = red_header()
        restrictions = fr_restrictions()
        audience = await fr.resolve_audience(header, restrictions, sorted(RED_SECTIONS))
        with pytest.raises(Exception) as info:
            await fr.check_audience(header, restrictions, sorted(RED_SECTIONS), audience)
    assert "IT-BORDER" in str(info.value) and "signed policy" in str(info.value)


async def test_node_refuses_an_unsigned_policy(start_broker: object) -> None:
    b = await start_broker(provisioned=False)  # type: ignore[operator]
    async with b.node("FR-NCB") as fr:
        with pytest.raises(Exception) as info:
            await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
    assert "unsigned bootstrap policy" in str(info.value)


async def test_active_policy_is_served_to_agencies(broker: Running) -> None:
    stub = broker.stub(Party("agency", "DE-BKA"))
    active = await stub.GetActivePolicy(agency_pb2.GetActivePolicyRequest(), timeout=5)
    assert active.version == broker.app.policy.version
    verified = act.verify_activation(
        active.activation,
        pki.load_ca_certificate(broker.deployment.keys_dir / "ca" / "ca.pem"),
        __import__("time").time_ns() // 1_000_000,
        expected_version=active.version,
    )
    assert verified.admin.id == "registrar"


async def test_node_refuses_to_seal_for_a_revoked_agency(broker: Running) -> None:
    # A node reads revoked.txt when it starts and leaves out a revoked agency, saying
    # why, even if the broker still listed it (it drops it within a second: the live
    # revocation of tests/integration/test_revocation_live.py).
    pki.revoke(broker.deployment.keys_dir, Party("agency", "IT-BORDER"))
    async with broker.node("FR-NCB") as fr:
        sent = await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
    assert "IT-BORDER" not in sent.audience
    assert any(
        w.agency_id == "IT-BORDER" and "revoked" in w.reason and not w.section
        for w in sent.withheld
    )
