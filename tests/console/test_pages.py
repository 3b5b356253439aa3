"""What a person sees on each page of the console, in a real browser, against the demo's
deployment served by a real broker (see conftest.py). Nothing here changes the broker."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from broker.v1 import audit_pb2

from .conftest import Scene, shot

pytestmark = pytest.mark.integration


def text(page: Any, selector: str) -> str:
    return str(page.inner_text(selector))


def raw(scene: Scene, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """A request outside the browser (no session cookie unless given)."""
    url = urlsplit(scene.base)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_the_demo_ends_with_the_console_commands_that_open_it(scene: Scene, page: Any) -> None:
    assert "to browse this deployment in the web console" in scene.demo_stdout
    assert scene.console_command[:1] == ["console"]
    assert "--auditor" in scene.console_command and "--admin" in scene.console_command
    # Following them (on free ports) signs in and shows who the console acts as.
    assert page.url == scene.base + "/"
    assert "urn:broker:auditor:dpo" in text(page, "main")
    assert "urn:broker:admin:registrar" in text(page, "main")
    shot(page, "overview")


def test_nobody_without_the_token_drives_it(scene: Scene, page: Any) -> None:
    status, body = raw(scene, "/log")
    assert status == 401 and "login URL" in body
    status, body = raw(scene, "/login?token=guess")
    assert status == 403 and "Wrong or missing token" in body
    port = urlsplit(scene.base).port
    status, body = raw(scene, "/", {"Host": f"attacker.example:{port}"})
    assert status == 421  # DNS rebinding: another name for 127.0.0.1 is refused
    response = page.goto(scene.base + "/log")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # no script at all
    assert response.headers["x-frame-options"] == "DENY"
    assert page.eval_on_selector_all("script", "els => els.length") == 0


def test_log_health_shows_verified_checkpoints_and_the_witness(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/log")
    assert text(page, "#monitor-verdict").startswith("✔ checkpoint")
    entries = text(page, "#entries-verdict")
    assert "entries hash to checkpoint" in entries and entries.startswith("✔")
    points = page.locator("svg.timeline circle.cp")
    assert points.count() >= 2
    # The demo's witness cosigned one checkpoint: a filled point and a verified cosigner.
    assert page.locator("svg.timeline circle.cp.cosigned").count() >= 1
    assert "✔ urn:broker:agency:EU-HUB" in text(page, "#checkpoint-table")
    page.click("text=Replay every logged decision")
    assert "every one replays the same" in text(page, "#replay-verdict")
    shot(page, "log-health")


def test_flows_draw_received_withheld_awaiting_and_dead_lettered(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/flows")
    svg = "svg.flows"

    def band(kind: str, recipient: str, outcome: str) -> Any:
        return page.locator(
            f'{svg} path[data-kind="{kind}"][data-recipient="{recipient}"]'
            f'[data-outcome="{outcome}"]'
        )

    received = band("interpol.red", "DE-BKA", "received")
    assert received.count() == 1
    assert "received (signed receipt)" in received.locator("title").text_content()
    # IT-BORDER got the Red notice's identity and photos only: the rest was withheld.
    withheld = band("interpol.red", "IT-BORDER", "withheld")
    assert "biometrics, case_facts, judicial" in withheld.locator("title").text_content()
    assert band("interpol.red", "DE-BKA", "awaiting").count() == 1  # the scene's pending one
    assert band("interpol.red", "EU-HUB", "undelivered").count() == 1  # its dead letter
    assert band("interpol.yellow", "IT-BORDER", "withheld").count() == 1
    rows = text(page, "#flow-table")
    assert "withheld by the policy" in rows and "dead-lettered" in rows
    shot(page, "flows")
    # A period before any traffic shows nothing.
    page.fill("input[name=from]", "2001-01-01")
    page.fill("input[name=to]", "2001-01-31")
    page.click("button:has-text('show')")
    assert "0 notice version(s)" in text(page, "#flow-summary")
    assert page.locator(f"{svg} path").count() == 0


def test_a_notices_journey_is_verified_in_the_console(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/notices")
    shot(page, "notices")
    page.click(f"a[href^='/notices/{scene.red_id}']")
    assert text(page, "#pod-verdict").startswith("✔ proof of delivery verified here")
    deliveries = page.locator("#delivery-table tr[data-recipient='DE-BKA']")
    assert "✔ signature verified" in deliveries.inner_text()
    assert "replays the same" in text(page, "#decision-verdict")
    steps = text(page, "#step-table")
    assert "superseded" in steps  # v2 left IT-BORDER out; the broker told it to delete
    shot(page, "journey")
    # Version 1: IT-BORDER's withheld sections, with the rule and its reason.
    page.click("a:has-text('v1')")
    decisions = text(page, "#decision-table")
    assert "biometrics only to police and bureau roles" in decisions
    assert "biometrics-police-only" in text(page, "#withheld-table")


def test_queues_show_pending_dead_letters_and_overdue_replies(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/queues")
    de = page.locator("#recipient-table tr[data-recipient='DE-BKA'] td[data-col='pending']")
    assert int(de.inner_text()) >= 1
    eu = page.locator("#recipient-table tr[data-recipient='EU-HUB'] td[data-col='dead']")
    assert int(eu.inner_text()) == 1
    assert scene.pending_id[:8] in text(page, "#waiting-table")
    assert scene.dead_id[:8] in text(page, "#dead-table")
    overdue = text(page, "#overdue-table")
    assert "reply.info_request" in overdue and "DE-BKA" in overdue and "FR-NCB" in overdue
    shot(page, "queues")


def _download_pod(page: Any, scene: Scene, tmp_path: Path) -> bytes:
    response = page.request.get(f"{scene.base}/notices/{scene.red_id}/pod.bin?version=1")
    assert response.ok
    data: bytes = response.body()
    return data


def test_an_uploaded_proof_of_delivery_verifies_and_a_tampered_one_fails(
    scene: Scene, page: Any, tmp_path: Path
) -> None:
    data = _download_pod(page, scene, tmp_path)
    good = tmp_path / "pod.bin"
    good.write_bytes(data)
    page.goto(scene.base + "/pod")
    page.set_input_files("#pod-file", str(good))
    page.click("#verify")
    verdict = text(page, "#pod-result")
    assert verdict.startswith("✔ verified") and scene.red_id in verdict
    assert "✔ signed receipt" in text(page, "#pod-receipts tr[data-recipient='DE-BKA']")
    shot(page, "pod-verified")

    # One bit of one receipt's signature flipped: the file still parses, and fails.
    pod = audit_pb2.ProofOfDelivery.FromString(data)
    sig = bytearray(pod.receipts[0].receipt.signature)
    sig[0] ^= 1
    pod.receipts[0].receipt.signature = bytes(sig)
    bad = tmp_path / "tampered.bin"
    bad.write_bytes(pod.SerializeToString())
    page.set_input_files("#pod-file", str(bad))
    page.click("#verify")
    verdict = text(page, "#pod-result")
    assert verdict.startswith("✘ proof of delivery does not verify")
    assert "receipt 0" in verdict
    shot(page, "pod-tampered")

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff" * 40)
    page.set_input_files("#pod-file", str(junk))
    page.click("#verify")
    assert "is not a proof-of-delivery file" in text(page, "#pod-result")


def test_registry_shows_status_serials_and_expiry_verified(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/registry")
    row = text(page, "#registry-table tr[data-agency='IT-BORDER']")
    assert "active" in row and "✔ signed by registrar" in row
    assert "✔ serial 1, valid until" in row and "expires" in row
    assert page.locator("#registry-table tr[data-agency]").count() == 4
    shot(page, "registry")


def test_policy_shows_the_active_bundle_and_a_diff_with_its_impact(
    scene: Scene, page: Any, tmp_path: Path
) -> None:
    page.goto(scene.base + "/policy")
    assert "compiled here: the files hash to this version" in text(page, "#bundle-verdict")
    active = text(page, "#active-version")
    shot(page, "policy")
    assert page.locator("#history-table tr[data-version]").count() == 2  # bootstrap + signed
    # A draft in which the hub gets Yellow notices only: the diff shows the changed line,
    # and the impact lists what the hub would lose of the recent Red notices.
    draft = hub_yellow_only(tmp_path)
    page.fill("input[name=b_dir]", str(draft))
    page.click("button:has-text('Diff')")
    assert active[:12] in page.inner_text("main")
    changed = page.locator("table.diff[data-path='rules/interpol.toml'] td.chg")
    assert changed.all_inner_texts() == ['kinds = ["interpol.*"]', 'kinds = ["interpol.yellow"]']
    summary = text(page, "#impact-summary")
    assert "0 (recipient, section) pair(s) would be gained" in summary
    lost = [r for r in page.locator("#impact-table tr").all_inner_texts() if "lost" in r]
    assert lost and all("EU-HUB" in r and "interpol.red" in r for r in lost)
    shot(page, "policy-diff", full=False)


def hub_yellow_only(tmp_path: Path) -> Path:
    """A copy of the shipped bundle in which the interpol-hub rule covers Yellow notices only."""
    import shutil

    from broker.sandbox import REPO_POLICIES

    draft = tmp_path / "draft"
    shutil.copytree(REPO_POLICIES, draft)
    rules = draft / "rules" / "interpol.toml"
    head, sep, tail = rules.read_text().partition('id = "interpol-hub"')
    tail = tail.replace('kinds = ["interpol.*"]', 'kinds = ["interpol.yellow"]', 1)
    rules.write_text(head + sep + tail)
    return draft
