"""The policy: the active bundle, its history, a side-by-side diff of two versions
with its impact on recent notices; activating a bundle and rolling back (signed by the
administrator's own key, after a confirmation that shows what will be signed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.bundles import read_bundle_dir
from broker.console import confirm, derive, textdiff
from broker.console.charts import clock
from broker.console.pages import ANY, Page, get, post
from broker.console.security import checked_form
from broker.console.sources import NeedsIdentity, Sources, now_ms
from broker.console.web import console_of, render
from broker.core import activation as act
from broker.core.policy import PolicyError, compile_bundle
from broker.errors import InvalidArgument, NotFound
from broker.sandbox import REPO_POLICIES
from broker.v1 import admin_pb2


async def _history(sources: Sources) -> list[derive.Activation]:
    """Activations newest first: from the broker (administrator) or the log (auditor)."""
    if sources.config.admin is not None:
        resp = await sources.admin_call("PolicyHistory", admin_pb2.PolicyHistoryRequest())
        rows = sorted(resp.entries, key=lambda e: e.sequence, reverse=True)
        return [
            derive.Activation(-1, e.sequence, e.version, e.admin, e.activated_at_ms, e.reason)
            for e in rows
        ]
    mirror = await sources.log()
    return derive.activations(mirror.indexed())


def _compiled(files: dict[str, bytes] | None, version: str) -> dict[str, object]:
    if files is None:
        return {"ok": False, "problem": f"the broker does not have bundle {version[:12]}"}
    try:
        bundle = compile_bundle(files)
    except PolicyError as exc:
        return {"ok": False, "problem": f"does not compile: {exc}"}
    if bundle.version != version:
        return {
            "ok": False,
            "problem": f"its files hash to {bundle.version[:12]}, not {version[:12]}",
        }
    return {
        "ok": True,
        "kinds": sorted(bundle.kinds),
        "specs": [bundle.kinds[k] for k in sorted(bundle.kinds)],  # sections and fields
        "rules": len(bundle.rules),
        "problem": "",
    }


async def policy_page(request: Request) -> Response:
    sources = console_of(request).sources
    history = await _history(sources)
    active = history[0] if history else None
    files = await sources.bundle(active.version) if active else None
    return render(
        request,
        "policy.html",
        title="Policy",
        history=history,
        active=active,
        files=sorted((files or {}).items()),
        compiled=_compiled(files, active.version) if active else None,
        default_dir=str(REPO_POLICIES),
    )


async def _side(sources: Sources, version: str, directory: str) -> tuple[str, dict[str, bytes]]:
    """(label, files) of one side of a diff: a version the broker knows, or a draft dir."""
    if directory:
        files = read_bundle_dir(Path(directory))
        try:
            return f"draft {directory} ({compile_bundle(files).version[:12]})", files
        except PolicyError as exc:
            raise InvalidArgument(f"the draft in {directory} does not compile: {exc}") from None
    found = await sources.bundle(version)
    if found is None:
        raise NotFound(f"the broker has no policy bundle {version[:16]}")
    return version, found


async def diff_page(request: Request) -> Response:
    sources = console_of(request).sources
    q = request.query_params
    history = await _history(sources)
    active = history[0].version if history else ""
    a_version, b_version, b_dir = q.get("a", active), q.get("b", ""), q.get("b_dir", "")
    if not b_version and not b_dir:
        raise InvalidArgument("choose a version (b) or a draft directory (b_dir) to compare")
    a_label, a_files = await _side(sources, a_version, "")
    b_label, b_files = await _side(sources, b_version, b_dir)
    impact = None
    if sources.config.admin is not None:
        impact = await sources.admin_call(
            "DiffPolicy", admin_pb2.DiffPolicyRequest(bundle=act.bundle_message(b_files))
        )
    return render(
        request,
        "policy_diff.html",
        title="Policy diff",
        a_label=a_label,
        b_label=b_label,
        files=textdiff.bundle_diff(a_files, b_files),
        impact=impact,
        active=active,
        history=history,
    )


async def _impact_notes(sources: Sources, files: dict[str, bytes]) -> tuple[str, ...]:
    diff = await sources.admin_call(
        "DiffPolicy", admin_pb2.DiffPolicyRequest(bundle=act.bundle_message(files))
    )
    notes = [
        f"over the {diff.notices} most recent notice(s): {diff.gained} (recipient, section) "
        f"pair(s) gained, {diff.lost} lost against the active bundle {diff.active_version[:12]}"
    ]
    notes += [
        f"{'gains' if c.gained else 'loses'}: {c.recipient} {c.section} of {c.kind} "
        f"{c.notice_id[:8]} v{c.version} ({c.reason})"
        for c in list(diff.changes)[:20]
    ]
    return tuple(notes)


async def _prepare(
    request: Request, kind: str, version: str, files: dict[str, bytes], reason: str
) -> Response:
    console = console_of(request)
    sources = console.sources
    admin = sources.config.admin
    if admin is None:
        raise NeedsIdentity("admin")
    resp = await sources.admin_call("PolicyHistory", admin_pb2.PolicyHistoryRequest())
    sequence = max((e.sequence for e in resp.entries), default=0) + 1
    at = now_ms()
    pending = confirm.activation(
        console.pending.new_id(),
        kind=kind,
        admin=admin,
        version=version,
        reason=reason,
        sequence=sequence,
        at_ms=at,
        files=files,
        back="/policy",
        clock=clock(at),
    )
    notes = await _impact_notes(sources, files)
    console.pending.add(replace(pending, notes=notes), at)
    return RedirectResponse(f"/confirm/{pending.id}", status_code=303)


async def activate(request: Request) -> Response:
    form = await checked_form(request)
    directory = str(form.get("dir", "")).strip()
    if not directory:
        raise InvalidArgument("give the bundle directory to activate")
    files = read_bundle_dir(Path(directory))
    try:
        version = compile_bundle(files).version
    except PolicyError as exc:
        raise InvalidArgument(f"the bundle in {directory} does not compile: {exc}") from None
    return await _prepare(request, confirm.ACTIVATE, version, files, str(form.get("reason", "")))


async def rollback(request: Request) -> Response:
    form = await checked_form(request)
    version = str(form.get("version", ""))
    sources = console_of(request).sources
    files = await sources.bundle(version)
    if files is None:
        raise NotFound(f"the broker has no policy bundle {version[:16]} to roll back to")
    checked = _compiled(files, version)
    if not checked["ok"]:
        raise InvalidArgument(f"bundle {version[:12]} {checked['problem']}")
    return await _prepare(request, confirm.ROLLBACK, version, files, str(form.get("reason", "")))


PAGE = Page(
    "policy",
    "/policy",
    "Policy",
    ANY,
    (
        get("/policy", policy_page),
        get("/policy/diff", diff_page),
        post("/policy/activate", activate),
        post("/policy/rollback", rollback),
    ),
    summary="active bundle, history, side-by-side diff with its impact; activate, roll back",
)
