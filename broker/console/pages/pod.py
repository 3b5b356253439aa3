"""Verify a proof-of-delivery file (`broker audit pod --out`, or downloaded from a
notice's journey) here, offline: only the CA certificate and the log key are used."""

from __future__ import annotations

from google.protobuf.message import DecodeError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from broker.client import audit as ac
from broker.console.pages import ANY, Page, get, post
from broker.console.security import checked_form
from broker.console.web import console_of, render
from broker.core import pod as pd
from broker.core.auditing import CheckpointError
from broker.errors import InvalidArgument
from broker.v1 import audit_pb2

MAX_POD = 8 * 1024 * 1024


async def pod_form(request: Request) -> Response:
    return render(request, "pod.html", title="Verify a proof of delivery", result=None)


async def pod_verify(request: Request) -> Response:
    form = await checked_form(request)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise InvalidArgument("choose a proof-of-delivery file to verify")
    data = await upload.read(MAX_POD + 1)
    if len(data) > MAX_POD:
        raise InvalidArgument(f"{upload.filename} is over {MAX_POD // 1024 // 1024} MiB")
    trust = console_of(request).sources.trust
    report, problem = None, ""
    pod = audit_pb2.ProofOfDelivery()
    try:
        pod.ParseFromString(data)
        report = trust.verify_pod(pod)
    except DecodeError:
        problem = f"{upload.filename} is not a proof-of-delivery file"
    except (pd.PodError, CheckpointError, ac.AuditFailure) as exc:
        problem = f"proof of delivery does not verify: {exc}"
    return render(
        request,
        "pod.html",
        title="Verify a proof of delivery",
        result={"name": upload.filename, "report": report, "problem": problem, "size": len(data)},
    )


PAGE = Page(
    "pod",
    "/pod",
    "Verify a proof",
    ANY,
    (get("/pod", pod_form), post("/pod", pod_verify)),
    summary="upload a proof-of-delivery file and verify it here, offline",
)
