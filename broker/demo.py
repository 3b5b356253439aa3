"""`broker demo`: one broker and four agencies on this machine exchange sealed notices.

A French NCB, a German federal police office, an Italian border unit and a
Europol-like hub. Three notices (an INTERPOL Red notice, a Yellow notice and an
SIS Art. 36 discreet check, each searchable by its selectors) go out with
different sections released to different recipients; the demo shows who
received which sections, the
sections withheld and the recipient refused (each with the policy's reason),
and verifies every signed receipt offline against the CA-bound keys. Then the
notices live on: an update that drops a recipient, a hit report with a
response deadline, a flag and a withdrawal, each acknowledged by every
recipient concerned; and an auditor checks the transparency log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from broker import demo_judicial, demo_lookup, pki
from broker.client.lookup import Lookups
from broker.client.node import (
    AgencyNode,
    LifecycleNotice,
    NodeConfig,
    PublishedNotice,
    ReceivedNotice,
    now_ms,
)
from broker.client.witness import run_witness
from broker.core import receipts as rcp
from broker.core.identity import verify_key_statement
from broker.sandbox import (
    ADMIN_ID,
    DEMO_AGENCIES,
    LOOKUP_ID,
    WITNESS_ID,
    Deployment,
    create_deployment,
    provision,
)
from broker.server.app import BrokerApp
from broker.v1 import agency_pb2, notice_pb2

Say = Callable[[str], None]
HOUR_MS = 3_600_000
WAIT_S = 10.0  # bound on every wait for a delivery or an acknowledgement

NOTICES: list[dict[str, object]] = [
    {
        "by": "FR-NCB",
        "kind": "interpol.red",
        "purpose": "locate_arrest",
        "tlp": "AMBER",
        "handling_codes": ["H0"],
        "evaluation": ("B", "2"),
        "sections": {
            # One 'field: value' line per field the catalogue asks (content_fields).
            "identity": "family_name: DUPONT\nforename: Jean\ndate_of_birth: 1981-03-14\n"
            "nationality: FR\nplace_of_birth: Lyon",
            "photos": "<JPEG bytes of two photographs>",
            "biometrics": "<fingerprint record, 10 prints, NIST format>",
            "case_facts": "offence: armed robbery\n"
            "summary: Armed robbery of a jewellery shop, Paris 8e, 2026-02-11",
            "judicial": "warrant_reference: 2026/0412\n"
            "issuing_authority: Tribunal judiciaire de Paris\npenalty_threshold: 20 years",
        },
    },
    {
        "by": "DE-BKA",
        "kind": "interpol.yellow",
        "purpose": "locate_missing",
        "tlp": "AMBER",
        "data_subject": notice_pb2.DATA_SUBJECT_VICTIM,
        "restrictions": {"allow_groups": ["schengen"]},
        "sections": {
            "identity": "family_name: MUELLER\nforename: Lena\ndate_of_birth: 2011-07-02\n"
            "date_missing: 2026-11-20\nnationality: DE",
            "photos": "<JPEG bytes of a recent school photograph>",
            "case_facts": "Missing since 2026-11-20, last seen at Munich central station",
        },
    },
    {
        "by": "IT-BORDER",
        "kind": "sis.art36",
        "purpose": "discreet_check",
        "tlp": "AMBER+STRICT",
        "handling_codes": ["H2"],
        "sections": {
            "identity": "ROSSI, Marco; born 1975-05-30; Italian national",
            "case_facts": "Suspected courier for a trafficking network, Genoa port",
            "action": "Discreet check: record route, vehicle and companions; do not stop",
        },
    },
]


async def run_demo(
    deployment: Deployment, say: Say = print, *, as_json: bool = False, suite: str = "classical"
) -> dict[str, object]:
    """Run the scenario against a broker started in this process; return a summary."""
    app = BrokerApp(deployment.server_config())
    port = await app.start()
    say(f"broker listening on 127.0.0.1:{port} (mutual TLS)")
    key_service = await demo_lookup.start_key_service(deployment)  # + lookups
    say(f"lookup-key service {LOOKUP_ID} listening on 127.0.0.1:{key_service.port} (OPRF key)")
    version = await provision(deployment, f"127.0.0.1:{port}")
    say(
        f"administrator {ADMIN_ID} signed and activated policy {version[:16]} and signed the "
        "registry; nodes check every audience against both before sealing"
    )
    witness_stop = asyncio.Event()
    witness = asyncio.create_task(
        run_witness(
            deployment.keys_dir,
            WITNESS_ID,
            f"127.0.0.1:{port}",
            deployment.root / "nodes" / f"{WITNESS_ID}.witness.json",
            stop=witness_stop,
            interval_s=0.2,
        )
    )
    say(
        f"{WITNESS_ID} witnesses the log: it cosigns each checkpoint consistent with the last; "
        "nodes rely only on cosigned checkpoints (trust.toml)"
    )
    nodes = {
        a.id: AgencyNode(
            NodeConfig(
                agency_id=a.id,
                broker=f"127.0.0.1:{port}",
                keys_dir=deployment.keys_dir,
                state_dir=deployment.root / "nodes",
                suite=suite,
            )
        )
        for a in deployment.agencies
    }
    if suite != "classical":
        say(
            f"every node seals with the {suite} suite: HPKE ML-KEM-768+X25519 key wraps, "
            "Ed25519 + ML-DSA-65 signatures on headers and receipts (docs/post-quantum.md)"
        )
    lookups = demo_lookup.lookups_for(nodes, deployment.keys_dir, key_service.port)
    received: dict[tuple[str, str], dict[str, bytes]] = {}
    got: defaultdict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)
    inboxes = Inboxes()
    stop = asyncio.Event()

    def handler_for(agency: str) -> Callable[[ReceivedNotice], Awaitable[None]]:
        async def handle(notice: ReceivedNotice) -> None:
            received[(notice.notice_id, agency)] = dict(notice.sections)
            inboxes.notices[(notice.notice_id, notice.version, agency)] = notice
            got[(notice.notice_id, agency)].set()

        return handle

    def lifecycle_for(agency: str) -> Callable[[LifecycleNotice], Awaitable[None]]:
        async def on_lifecycle(notice: LifecycleNotice) -> None:
            inboxes.actions[agency].append(notice)

        return on_lifecycle

    listeners = [
        asyncio.create_task(
            node.listen(handler_for(agency), stop=stop, on_lifecycle=lifecycle_for(agency))
        )
        for agency, node in nodes.items()
    ]
    summary: dict[str, object] = {"notices": []}
    try:
        published: list[tuple[dict[str, object], PublishedNotice]] = []
        for spec in NOTICES:
            restrictions = notice_pb2.OriginatorRestrictions(**spec.get("restrictions", {}))  # type: ignore[arg-type]
            sections = {k: v.encode() for k, v in spec["sections"].items()}  # type: ignore[attr-defined]
            result = await lookups[str(spec["by"])].publish(
                selectors=demo_lookup.selectors_for(str(spec["kind"])),  # + lookups: indexed
                kind=str(spec["kind"]),
                purpose=str(spec["purpose"]),
                sections=sections,
                tlp=str(spec["tlp"]),
                handling_codes=spec.get("handling_codes", ()),
                evaluation=spec.get("evaluation"),
                data_subject=int(spec.get("data_subject", notice_pb2.DATA_SUBJECT_SUSPECT)),  # type: ignore[call-overload]
                restrictions=restrictions,
            )
            published.append((spec, result))
            say("")
            say(f"{spec['by']} published {spec['kind']} {result.notice_id} (TLP:{spec['tlp']})")
            for recipient, secs in sorted(result.audience.items()):
                say(f"  sealed for {recipient:<10} {', '.join(secs)}")
            for w in result.withheld:
                what = f"section {w.section}" if w.section else "whole notice"
                say(f"  withheld   {w.agency_id:<10} {what}: {w.reason} [{', '.join(w.rules)}]")
            types = sorted({s.type for s in demo_lookup.selectors_for(str(spec["kind"]))})
            say(f"  searchable by {', '.join(types)} (OPRF tokens in the broker's index)")

        for _spec, result in published:
            for recipient in result.audience:
                await asyncio.wait_for(got[(result.notice_id, recipient)].wait(), timeout=30)
        say("")
        say("what each recipient opened (verified signature, inclusion proofs, commitments):")
        for spec, result in published:
            for recipient in sorted(result.audience):
                opened = received[(result.notice_id, recipient)]
                say(f"  {recipient:<10} <- {spec['kind']:<16} {', '.join(sorted(opened))}")
                if opened.keys() != set(result.audience[recipient]):
                    raise AssertionError(f"{recipient} opened other sections than sealed for it")

        say("")
        say("delivery receipts (signature and Merkle inclusion verified offline):")
        notices_out = []
        for spec, result in published:
            origin = nodes[str(spec["by"])]
            status = await _wait_delivered(origin, result)
            verified = []
            for r in status.recipients:
                receipt = _verify_receipt(origin, r)
                verified.append(r.recipient)
                say(
                    f"  {spec['kind']:<16} {r.recipient:<10} delivered, receipt verified "
                    f"(sections: {', '.join(receipt.sections)})"
                )
            notices_out.append(
                {
                    "notice_id": result.notice_id,
                    "kind": spec["kind"],
                    "originator": spec["by"],
                    "audience": {k: list(v) for k, v in result.audience.items()},
                    "withheld": [
                        {"agency": w.agency_id, "section": w.section, "reason": w.reason}
                        for w in result.withheld
                    ],
                    "receipts_verified": sorted(verified),
                }
            )
        summary["notices"] = notices_out
        summary["border_checks"] = await demo_lookup.border_checks(lookups, inboxes.notices, say)
        summary["lifecycle"] = await _lifecycle(nodes, published, inboxes, say, lookups)

        async def wait_opened(nid: str, version: int, agency: str) -> ReceivedNotice:
            return await _opened(inboxes, nid, version, agency)

        summary["judicial"] = await demo_judicial.mla_request(  # + judicial, evidence
            nodes,
            wait_opened,
            f"127.0.0.1:{port}",
            deployment.keys_dir,
            deployment.root / "evidence",
            say,
        )
        summary["audit"] = await _audit(deployment, f"127.0.0.1:{port}", published, say)
        if as_json:
            say(json.dumps(summary, indent=2))
        say("")
        say("demo complete: every notice delivered, every receipt verified")
        return summary
    finally:
        stop.set()
        witness_stop.set()
        await asyncio.gather(*listeners, witness, return_exceptions=True)
        for node in nodes.values():
            await node.close()
        for lk in lookups.values():
            await lk.keys.close()
        await key_service.stop(0.5)
        await app.stop(grace=1.0)


@dataclasses.dataclass
class Inboxes:
    """What the demo's listeners were handed: notices by (id, version, agency), and the
    lifecycle actions each agency applied."""

    notices: dict[tuple[str, int, str], ReceivedNotice] = dataclasses.field(default_factory=dict)
    actions: defaultdict[str, list[LifecycleNotice]] = dataclasses.field(
        default_factory=lambda: defaultdict(list)
    )

    def action(self, agency: str, kind: str, notice_id: str) -> LifecycleNotice | None:
        return next(
            (a for a in self.actions[agency] if a.kind == kind and a.action.notice_id == notice_id),
            None,
        )


async def _until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


async def _acknowledged(
    nodes: dict[str, AgencyNode], inboxes: Inboxes, agency: str, kind: str, notice_id: str
) -> LifecycleNotice:
    """Wait until `agency` applied a `kind` action on the notice and the broker accepted
    its signed receipt for it; return the action as the agency saw it."""
    await _until(
        lambda: inboxes.action(agency, kind, notice_id) is not None,
        f"{agency} to receive the {kind} action",
    )
    notice = inboxes.action(agency, kind, notice_id)
    assert notice is not None
    key = (notice.action.action_id, 0)
    await _until(
        lambda: key in nodes[agency].stats.acked, f"the broker to accept {agency}'s receipt"
    )
    return notice


async def _opened(inboxes: Inboxes, notice_id: str, version: int, agency: str) -> ReceivedNotice:
    """Wait until `agency` opened that version of the notice; return it."""
    key = (notice_id, version, agency)
    await _until(lambda: key in inboxes.notices, f"{agency} to open {notice_id} v{version}")
    return inboxes.notices[key]


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _erased(n: int) -> str:
    return f"erased {n} local cop{'y' if n == 1 else 'ies'}"


async def _lifecycle(
    nodes: dict[str, AgencyNode],
    published: list[tuple[dict[str, object], PublishedNotice]],
    inboxes: Inboxes,
    say: Say,
    lookups: dict[str, Lookups],
) -> dict[str, object]:
    """Update, hit report, flag and withdrawal; every action is signed by its actor and
    acknowledged by a signed receipt from every agency it reaches."""
    (red_spec, red), (yellow_spec, yellow), (art36_spec, art36) = published
    say("")
    say("lifecycle (signed actions; every agency told acknowledges with a signed receipt):")

    # An update: version 2 corrects the case facts and leaves IT-BORDER out.
    fr, dropped = nodes["FR-NCB"], "IT-BORDER"
    sections = {k: v.encode() for k, v in red_spec["sections"].items()}  # type: ignore[attr-defined]
    sections["case_facts"] = (
        b"offence: armed robbery\nsummary: Armed robbery, Paris 8e, 2026-02-12 (date corrected)"
    )
    v2 = await lookups["FR-NCB"].publish(
        selectors=demo_lookup.selectors_for(str(red_spec["kind"])),  # still searchable
        kind=str(red_spec["kind"]),
        purpose=str(red_spec["purpose"]),
        sections=sections,
        tlp=str(red_spec["tlp"]),
        handling_codes=red_spec.get("handling_codes", ()),
        evaluation=red_spec.get("evaluation"),
        restrictions=notice_pb2.OriginatorRestrictions(deny_agencies=[dropped]),
        notice_id=red.notice_id,
        version=red.version + 1,
    )
    say(
        f"  FR-NCB published {red_spec['kind']} v{v2.version}: case facts corrected, "
        f"{dropped} left out"
    )
    for agency in sorted(v2.audience):
        notice = await _opened(inboxes, red.notice_id, v2.version, agency)
        facts = notice.sections["case_facts"].decode().replace("\n", "; ")
        say(f'    {agency:<10} opened v{v2.version}: case_facts "{facts}"')
    gone = await _acknowledged(nodes, inboxes, dropped, "superseded", red.notice_id)
    held = nodes[dropped].inbox.held(red.notice_id)
    if held:
        raise AssertionError(f"{dropped} still holds a superseded copy")
    say(
        f"    {dropped:<10} superseded (not in v{gone.action.version}): "
        f"{_erased(gone.erased)}, holds {held}; acknowledged"
    )

    # A hit report on the Red notice, to its originator only, with a 12-hour deadline.
    de = nodes["DE-BKA"]
    hit = await de.reply(
        "reply.hit_report",
        await _opened(inboxes, red.notice_id, v2.version, "DE-BKA"),
        {"hit": b"DUPONT, Jean found at Frankfurt airport 2026-11-28 09:40; detained"},
        respond_within_ms=12 * HOUR_MS,
    )
    report = await _opened(inboxes, hit.notice_id, hit.version, "FR-NCB")
    (row,) = [r for r in (await fr.replies(open_only=True)).replies if r.notice_id == hit.notice_id]
    say(
        f"  DE-BKA reported a hit on the {red_spec['kind']} notice to "
        f"{', '.join(sorted(hit.audience))} (its originator only):"
    )
    say(f'    FR-NCB     opened it: "{report.sections["hit"].decode()}"')
    say(
        f"    FR-NCB     open replies: {row.kind} from {getattr(row, 'from')}, "
        f"answer due by {_clock(row.respond_by_ms)} (12 h)"
    )

    # A flag: the Art. 36 alert's action will not be taken on French territory.
    reason = "discreet checks are not carried out on French territory"
    flag = await fr.flag(art36.notice_id, reason)
    assert not flag.told  # a recipient is not told who else holds the notice
    say(f'  FR-NCB flagged the {art36_spec["kind"]} notice: "{reason}"')
    # The broker tells the originator and the other recipients (SIS Art. 24).
    to_tell = sorted(({str(art36_spec["by"])} | set(art36.audience)) - {"FR-NCB"})
    for agency in to_tell:
        await _acknowledged(nodes, inboxes, agency, "flag", art36.notice_id)
        role = "originator" if agency == art36_spec["by"] else "recipient"
        say(f"    {agency:<10} told ({role}); acknowledged")

    # A withdrawal reaching every recipient: each erases its copy and acknowledges.
    origin = str(yellow_spec["by"])
    why = "the missing person was found safe"
    withdrawn = await nodes[origin].withdraw(yellow.notice_id, why)
    if sorted(withdrawn.told) != sorted(yellow.audience):
        raise AssertionError("the withdrawal did not reach every recipient")
    say(f'  {origin} withdrew the {yellow_spec["kind"]} notice: "{why}"')
    erased = {}
    for agency in sorted(yellow.audience):
        got = await _acknowledged(nodes, inboxes, agency, "withdraw", yellow.notice_id)
        held = nodes[agency].inbox.held(yellow.notice_id)
        if held:
            raise AssertionError(f"{agency} still holds a withdrawn notice")
        erased[agency] = got.erased
        say(f"    {agency:<10} {_erased(got.erased)}, holds {held}; acknowledged")
    return {
        "update": {
            "notice_id": v2.notice_id,
            "version": v2.version,
            "audience": sorted(v2.audience),
            "superseded": {dropped: gone.erased},
        },
        "hit_report": {
            "notice_id": hit.notice_id,
            "in_reply_to": red.notice_id,
            "to": sorted(hit.audience),
            "respond_by_ms": row.respond_by_ms,
        },
        "flag": {"notice_id": art36.notice_id, "by": "FR-NCB", "told": to_tell},
        "withdraw": {"notice_id": yellow.notice_id, "by": origin, "erased": erased},
    }


async def _audit(
    deployment: Deployment,
    broker: str,
    published: list[tuple[dict[str, object], PublishedNotice]],
    say: Say,
) -> dict[str, object]:
    """The transparency log, checked the way an auditor and a witness would."""
    from broker.client import audit as ac
    from broker.core.identity import Party
    from broker.core.pod import verify_pod
    from broker.sandbox import AUDITOR_ID

    keys, state = deployment.keys_dir, deployment.root / "audit"
    witness = "EU-HUB"
    say("")
    say(f"transparency log, checked by auditor {AUDITOR_ID} and witness {witness}:")
    trust = ac.load_trust(keys, witnesses=[witness])
    async with ac.AuditClient(broker, keys, Party("auditor", AUDITOR_ID)) as auditor:
        pods = []
        for spec, result in published:
            pod = await auditor.pod(result.notice_id, result.version)
            proven = verify_pod(
                pod, trust.ca_key, trust.log, origin=trust.origin, pq_verifier=trust.log_pq
            )
            pods.append({"notice_id": proven.notice_id, "receipts": len(proven.receipts)})
            say(
                f"  {spec['kind']:<16} proof of delivery verified offline: "
                f"{len(proven.receipts)} signed receipt(s), checkpoint {proven.checkpoint.size}"
            )
        async with ac.AuditClient(broker, keys, Party("agency", witness)) as node:
            creds = pki.load_agency(keys, witness)
            cosigned = await ac.cosign(node, trust, state / f"{witness}.json", creds)
        if not cosigned.ok:
            raise AssertionError(cosigned.message)
        say(f"  {witness} (witness) verified checkpoint {cosigned.size} and cosigned it")
        watched = await ac.monitor(
            auditor,
            dataclasses.replace(trust, min_cosignatures=1),
            state / f"{AUDITOR_ID}.json",
            check_entries=True,
        )
        if not watched.ok:
            raise AssertionError(watched.message)
        say(
            f"  checkpoint {watched.size}: broker signature"
            f"{'s (Ed25519 and ML-DSA-65)' if trust.log_pq is not None else ''} and "
            f"{len(watched.cosigners)} witness "
            f"cosignature verified; all {watched.entries_checked} entries hash to its root"
        )
        replayed = (await ac.replay(auditor, trust)).report
    say(
        f"  replayed {replayed.replayed} decisions under policy "
        f"{', '.join(v[:12] for v in replayed.bundles)}: {replayed.deliveries} deliveries and "
        f"{replayed.receipts} receipts permitted, {len(replayed.findings)} finding(s)"
    )
    if not replayed.ok:
        for f in replayed.findings:
            say(f"    {f.describe()}")
        raise AssertionError("the replay found deliveries the policy did not permit")
    return {
        "checkpoint": {"size": watched.size, "root": watched.root.hex()},
        "proofs_of_delivery": pods,
        "replay": {"decisions": replayed.replayed, "findings": len(replayed.findings)},
    }


async def _wait_delivered(
    node: AgencyNode, result: PublishedNotice
) -> agency_pb2.DeliveryStatusResponse:
    for _ in range(300):
        status = await node.delivery_status(result.notice_id, result.version)
        if status.recipients and all(
            r.state == agency_pb2.DELIVERY_STATE_DELIVERED for r in status.recipients
        ):
            return status
        await asyncio.sleep(0.1)
    raise TimeoutError(f"notice {result.notice_id} was not receipted by every recipient")


def _verify_receipt(node: AgencyNode, status: agency_pb2.RecipientStatus) -> notice_pb2.Receipt:
    """Check a proven receipt with the recipient's CA-bound signing key."""
    statement = notice_pb2.SignedKeyStatement()
    statement.ParseFromString(
        (node.config.keys_dir / "agencies" / status.recipient / "statement.bin").read_bytes()
    )
    keys = verify_key_statement(statement, node.ca_key, now_ms(), expected_agency=status.recipient)
    return rcp.verify_proven_receipt(status.receipt, keys.verify_key)


def main(directory: Path | None = None, *, as_json: bool = False, suite: str = "classical") -> int:
    """Entry point of `broker demo` (`suite` "hybrid": every agency gets PQ keys)."""
    with tempfile.TemporaryDirectory(prefix="broker-demo-") as tmp:
        root = directory or Path(tmp)
        deployment = create_deployment(root, DEMO_AGENCIES, pq=suite != "classical")
        print(f"deployment in {root}: CA, broker and 4 agencies with CA-signed key statements")
        for a in DEMO_AGENCIES:
            print(f"  {a.id:<10} {a.country}  roles={','.join(a.roles):<14} {a.title}")
        asyncio.run(run_demo(deployment, as_json=as_json, suite=suite))
        for line in console_hint(directory):
            print(line)
    return 0


def console_hint(directory: Path | None) -> list[str]:
    """The closing lines: how to open the web console on the demo's deployment."""
    from broker.sandbox import AUDITOR_ID

    broker = ".venv/bin/broker"
    lines = [""]
    if directory is None:
        directory = Path("data/demo")
        lines += [
            "this deployment was temporary; to browse one in the web console, keep it in a new",
            "directory and serve it again:",
            f"  {broker} demo --dir {directory}",
        ]
    else:
        lines.append("to browse this deployment in the web console, serve it again:")
    lines += [
        f"  {broker} serve --config {directory / 'broker.toml'} &",
        f"  {broker} console --keys-dir {directory / 'keys'} --auditor {AUDITOR_ID} "
        f"--admin {ADMIN_ID} --state-dir {directory / 'console'}",
        "and open the login URL the console prints (http://127.0.0.1:8470/login?token=...)",
    ]
    return lines
