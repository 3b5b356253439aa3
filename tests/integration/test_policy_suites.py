"""Per-kind suites in the signed policy bundle (issue 16): an administrator activates a
catalogue whose interpol.red says `suites = ["hybrid"]`; the SDK refuses to seal such a
notice classical, and the broker refuses at Publish what an SDK without that check
sealed, both with the same message. Real broker, mutual TLS, real nodes, mixed
deployment (IT-BORDER has no post-quantum keys)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from broker.bundles import read_bundle_dir
from broker.client import publisher
from broker.client.admin import AdminClient
from broker.core.envelope import SUITE
from broker.core.suites import SuitePolicy
from broker.errors import FailedPrecondition
from broker.sandbox import ADMIN_ID, REPO_POLICIES, Deployment

from .conftest import Running
from .helpers import RED_SECTIONS
from .test_hybrid_suite import _broker, mixed_template  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration
MESSAGE = "suite 'classical' is not allowed for notices of kind 'interpol.red'; seal with hybrid"


def hybrid_red_bundle() -> dict[str, bytes]:
    files = read_bundle_dir(REPO_POLICIES)
    header = b'[kinds."interpol.red"]\n'
    assert files["catalogue.toml"].count(header) == 1
    files["catalogue.toml"] = files["catalogue.toml"].replace(
        header, header + b'suites = ["hybrid"]\n'
    )
    return files


@pytest.fixture
async def red_policy_hybrid(
    mixed_template: Deployment,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Running]:
    async with _broker(mixed_template, tmp_path, SuitePolicy()) as running:
        d = running.deployment
        async with AdminClient(d.keys_dir, ADMIN_ID, running.target) as admin:
            await admin.activate(hybrid_red_bundle(), "interpol.red requires the hybrid suite")
        assert running.app.policy.kinds["interpol.red"].suites != ()
        yield running


async def red(node: object, suite: str, to: list[str]) -> object:
    return await node.publish(  # type: ignore[attr-defined]
        kind="interpol.red",
        purpose="locate_arrest",
        sections=RED_SECTIONS,
        recipients=to,
        suite=suite,
    )


async def test_the_sdk_refuses_before_sealing(red_policy_hybrid: Running) -> None:
    async with red_policy_hybrid.node("FR-NCB") as fr:
        before = red_policy_hybrid.count("notices")
        with pytest.raises(FailedPrecondition) as info:
            await red(fr, "classical", ["DE-BKA"])
        assert str(info.value) == MESSAGE
        # auto picks hybrid for such a kind, and says who could not open it
        with pytest.raises(FailedPrecondition, match=r"key statement of IT-BORDER"):
            await red(fr, "auto", ["IT-BORDER"])
        assert red_policy_hybrid.count("notices") == before  # nothing reached the broker
        sent = await red(fr, "auto", ["DE-BKA"])
        sent_hybrid = await red(fr, "hybrid", ["DE-BKA"])
        assert sent.notice_id and sent_hybrid.notice_id  # type: ignore[attr-defined]


async def test_the_broker_refuses_at_publish(
    red_policy_hybrid: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SDK without the check (an old release, or a node that skips it) seals classical:
    the broker refuses with FAILED_PRECONDITION and the same message."""
    monkeypatch.setattr(publisher, "choose_suite", lambda *args, **kw: SUITE)
    async with red_policy_hybrid.node("FR-NCB") as fr:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await red(fr, "classical", ["DE-BKA"])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == MESSAGE
