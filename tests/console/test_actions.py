"""Signed administrator actions from the console, in a real browser: each one shows what
will be signed, changes nothing until confirmed, and really changes the broker once
confirmed (checked with an independent AdminClient, and the signatures verified)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography import x509

from broker.bundles import read_bundle_dir
from broker.client.admin import AdminClient
from broker.core import activation as act
from broker.core.policy import compile_bundle
from broker.sandbox import ADMIN_ID
from broker.v1 import admin_pb2

from .conftest import Scene, in_thread, shot
from .test_pages import hub_yellow_only, text

pytestmark = pytest.mark.integration


def broker_state(scene: Scene) -> tuple[str, dict[str, admin_pb2.AgencyEntry], Any]:
    """(active version, registry, signed entries) as the broker holds them."""

    async def go() -> tuple[str, dict[str, admin_pb2.AgencyEntry], Any]:
        async with AdminClient(scene.keys, ADMIN_ID, scene.target) as admin:
            history = await admin.call("PolicyHistory", admin_pb2.PolicyHistoryRequest())
            listed = await admin.call("ListAgencies", admin_pb2.ListAgenciesRequest())
        active = next(e.version for e in history.entries if e.active)
        return active, {e.id: e for e in listed.agencies}, listed

    return in_thread(go())


def prepare_activation(page: Any, scene: Scene, directory: str, reason: str) -> str:
    page.goto(scene.base + "/policy")
    page.fill("#activate input[name=dir]", directory)
    page.fill("#activate input[name=reason]", reason)
    page.click("text=Prepare activation…")
    assert "/confirm/" in page.url, page.inner_text("main")
    return str(page.url)


def test_an_activation_changes_nothing_until_confirmed(
    scene: Scene, page: Any, tmp_path: Any
) -> None:
    before, _, _ = broker_state(scene)
    draft = hub_yellow_only(tmp_path)
    version = compile_bundle(read_bundle_dir(draft)).version
    url = prepare_activation(page, scene, str(draft), "hub: yellow notices only")
    # The confirmation shows exactly what will be signed ...
    fields = text(page, "#to-sign")
    assert version in fields and "registrar" in fields and "hub: yellow notices only" in fields
    payload = page.inner_text("dd[data-field=payload]")
    signed = admin_pb2.PolicyActivation.FromString(bytes.fromhex(payload))
    assert (signed.version, signed.admin, signed.reason) == (
        version,
        ADMIN_ID,
        "hub: yellow notices only",
    )
    assert "lost against the active bundle" in text(page, "#impact-notes")
    shot(page, "confirm-activation")
    # ... and, not confirmed, leaves the broker as it was.
    page.goto(scene.base + "/policy")
    assert broker_state(scene)[0] == before
    # A POST without the CSRF token (or from another origin) is refused; still nothing.
    key = url.rsplit("/", 1)[1]
    refused = page.request.post(f"{scene.base}/confirm/{key}", form={"csrf": "forged"})
    assert refused.status == 403 and "no valid CSRF token" in refused.text()
    cross = page.request.post(
        f"{scene.base}/confirm/{key}", headers={"Origin": "http://attacker.example"}
    )
    assert cross.status == 403
    assert broker_state(scene)[0] == before
    # Cancelled: the prepared action is gone, and nothing was signed.
    page.goto(url)
    page.click("#cancel")
    page.goto(url)
    assert "nothing was signed" in text(page, "#error")
    assert broker_state(scene)[0] == before


def test_a_confirmed_activation_and_rollback_change_the_active_policy(
    scene: Scene, page: Any, tmp_path: Any
) -> None:
    before, _, _ = broker_state(scene)
    draft = hub_yellow_only(tmp_path)
    version = compile_bundle(read_bundle_dir(draft)).version
    reason = "<script>alert('hub')</script> yellow only"  # shown as text, never run
    url = prepare_activation(page, scene, str(draft), reason)
    csrf = page.locator("input[name=csrf]").first.input_value()
    page.click("#confirm")
    assert f"policy {version[:16]} active" in text(page, "#done")
    assert broker_state(scene)[0] == version
    # The confirmation is single use.
    again = page.request.post(url, form={"csrf": csrf})
    assert again.status == 404 and broker_state(scene)[0] == version

    page.goto(scene.base + "/policy")
    assert text(page, "#active-version") == version
    assert reason in text(page, "#history-table")
    assert page.eval_on_selector_all("script", "els => els.length") == 0
    # Roll back to the version before, from the history.
    row = page.locator(f"#history-table tr[data-version='{before}']").first
    row.locator("input[name=reason]").fill("back to the shipped policy")
    row.locator("button").click()
    assert "Roll back the policy" in text(page, "h1")
    assert before in text(page, "#to-sign")
    page.click("#confirm")
    assert broker_state(scene)[0] == before

    async def signed_activation() -> admin_pb2.PolicyHistoryResponse:
        async with AdminClient(scene.keys, ADMIN_ID, scene.target) as admin:
            return await admin.call("PolicyHistory", admin_pb2.PolicyHistoryRequest())

    history = in_thread(signed_activation())
    assert [e.reason for e in sorted(history.entries, key=lambda e: e.sequence)][-2:] == [
        reason,
        "back to the shipped policy",
    ]


def test_suspending_an_agency_is_signed_and_confirmed(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/registry")
    row = page.locator("#registry-table tr[data-agency='IT-BORDER']")
    row.locator("input[name=reason]").fill("audit of the border unit")
    row.locator("button").click()
    fields = text(page, "#to-sign")
    assert "active → suspended" in fields and "1 → 2" in fields
    shot(page, "confirm-suspension")
    assert broker_state(scene)[1]["IT-BORDER"].status == "active"  # not yet
    page.click("#confirm")
    assert "IT-BORDER is now suspended (revision 2)" in text(page, "#done")
    _, registry, listed = broker_state(scene)
    assert registry["IT-BORDER"].status == "suspended"
    signed = next(
        s for e, s in zip(listed.agencies, listed.signed, strict=True) if e.id == "IT-BORDER"
    )
    ca = x509.load_pem_x509_certificate((scene.keys / "ca" / "ca.pem").read_bytes())
    verified = act.verify_agency_entry(signed, ca, time.time_ns() // 1_000_000)
    assert verified.admin.id == ADMIN_ID and verified.entry.status == "suspended"
    page.goto(scene.base + "/registry")
    assert "suspended" in text(page, "#registry-table tr[data-agency='IT-BORDER'] td.status")
    # And back.
    row = page.locator("#registry-table tr[data-agency='IT-BORDER']")
    row.locator("input[name=reason]").fill("audit done")
    row.locator("button:has-text('Reactivate')").click()
    page.click("#confirm")
    assert broker_state(scene)[1]["IT-BORDER"].status == "active"
