"""A complete local deployment in one directory: CA, broker and agency keys,
registry and broker.toml. Used by `broker demo` and by the integration tests.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from broker import lookup_keys, pki
from broker.config import ServerConfig
from broker.core.identity import Party
from broker.pqlog import ensure_pq_log_key
from broker.trustconfig import TRUST_FILE

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"
AUDITOR_ID = "dpo"  # the demo's auditor (a data-protection officer)
WITNESS_ID = "EU-HUB"  # the demo's witness: cosigns the log's checkpoints
ADMIN_ID = "registrar"  # the deployment's first administrator
LOOKUP_ID = "oprf"  # the deployment's lookup-key service (urn:broker:lookup:oprf)


@dataclass(frozen=True)
class AgencySpec:
    id: str
    country: str
    roles: tuple[str, ...]
    title: str = ""
    groups: tuple[str, ...] = ()
    purposes: tuple[str, ...] = ()


# Purposes each agency declares (policy purpose limitation: a notice reaches only
# agencies whose purposes cover the notice's; see policies/catalogue.toml [purposes]).
_POLICE_PURPOSES = (
    "locate_arrest",
    "locate_missing",
    "identification",
    "investigation",
    "threat_warning",
    "sanctions",
    "judicial_procedure",
    "discreet_check",
    "seizure",
)
DEMO_AGENCIES = (
    AgencySpec(
        "FR-NCB",
        "FR",
        ("ncb", "police"),
        "French INTERPOL National Central Bureau",
        purposes=_POLICE_PURPOSES,
    ),
    AgencySpec(
        "DE-BKA",
        "DE",
        ("police", "sirene"),
        "German federal criminal police office",
        purposes=_POLICE_PURPOSES,
    ),
    AgencySpec(
        "IT-BORDER",
        "IT",
        ("border",),
        "Italian border police unit",
        purposes=(
            "locate_arrest",
            "locate_missing",
            "threat_warning",
            "sanctions",
            "judicial_procedure",
            "discreet_check",
            "seizure",
            "border_control",
            "return",
        ),
    ),
    AgencySpec(
        "EU-HUB",
        "EU",
        ("hub",),
        "Europol-like coordination hub",
        purposes=(
            "locate_arrest",
            "locate_missing",
            "identification",
            "investigation",
            "threat_warning",
            "discreet_check",
            "seizure",
        ),
    ),
)


@dataclass(frozen=True)
class Deployment:
    root: Path
    keys_dir: Path
    registry: Path
    config_file: Path
    agencies: tuple[AgencySpec, ...]

    def server_config(self, listen: str = "127.0.0.1:0", **kw: object) -> ServerConfig:
        return ServerConfig(
            listen=listen,
            data_dir=self.root / "broker",
            keys_dir=self.keys_dir,
            policy_dir=REPO_POLICIES,
            registry=self.registry,
            metrics_listen="",
            **kw,  # type: ignore[arg-type]
        )


def _toml_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def create_deployment(
    root: Path,
    agencies: tuple[AgencySpec, ...] = DEMO_AGENCIES,
    *,
    listen: str = "127.0.0.1:7443",
    pq: bool | Collection[str] = False,
    pq_log: bool | None = None,
) -> Deployment:
    """Create CA, broker certificate, agency keys and statements, registry.toml, broker.toml.

    `pq` gives post-quantum keys (the hybrid suite) to every agency (True) or to those named.
    `pq_log` (default: `pq is True`) gives the broker an ML-DSA-65 log key and writes
    trust.toml's ``[log] suite = "hybrid"``: checkpoints signed and checked hybrid.
    """
    keys = root / "keys"
    pki.generate_ca(keys)
    pki.issue_certificate(keys, Party("broker", "broker"))
    pki.issue_certificate(keys, Party("auditor", AUDITOR_ID))  # audits the transparency log
    pki.issue_certificate(keys, Party("admin", ADMIN_ID))
    pki.issue_certificate(keys, Party("lookup", LOOKUP_ID))  # + lookups: TLS, then its key
    lookup_keys.ensure_lookup_key(keys, LOOKUP_ID)
    lines = ["# Agency registry: who each agency is, as the policy sees it.", ""]
    for a in agencies:
        pki.issue_agency(keys, a.id, pq=pq is True or (not isinstance(pq, bool) and a.id in pq))
        lines += [
            f'[agencies."{a.id}"]',
            f'title = "{a.title}"',
            f'country = "{a.country}"',
            f"roles = {_toml_list(a.roles)}",
            f"groups = {_toml_list(a.groups)}",
            f"purposes = {_toml_list(a.purposes)}",
            'status = "active"',
            "",
        ]
    registry = root / "registry.toml"
    registry.write_text("\n".join(lines), encoding="utf-8")
    hybrid_log = pq is True if pq_log is None else pq_log
    if hybrid_log:
        ensure_pq_log_key(keys, "broker")
    write_trust(
        keys,
        [a.id for a in agencies if a.id == WITNESS_ID],
        log_suite="hybrid" if hybrid_log else "classical",
    )
    config_file = root / "broker.toml"
    config_file.write_text(
        "\n".join(
            [
                "[server]",
                f'listen = "{listen}"',
                'data_dir = "broker"',
                'keys_dir = "keys"',
                f'policy_dir = "{REPO_POLICIES}"',
                'registry = "registry.toml"',
                'metrics_listen = "127.0.0.1:9464"',
                "",
                "[limits]",
                "lease_ms = 30000",
                "max_attempts = 5",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return Deployment(root, keys, registry, config_file, agencies)


def write_trust(
    keys: Path, witnesses: list[str], broker_id: str = "broker", log_suite: str = "classical"
) -> Path:
    """The deployment's trust.toml (broker/trustconfig.py): nodes and auditors rely only
    on checkpoints that every listed witness cosigned (one required per witness here) and,
    with `log_suite` "hybrid", that carry both signatures of the hybrid log key."""
    path = keys / TRUST_FILE
    listed = ", ".join(f'"{w}"' for w in witnesses)
    path.write_text(
        "# What every party trusts about the transparency log (broker/trustconfig.py).\n"
        "[log]\n"
        f'broker = "{broker_id}"\n'
        f"witnesses = [{listed}]\n"
        f"min_cosignatures = {len(witnesses)}\n"
        "max_lag_s = 600\n" + (f'suite = "{log_suite}"\n' if log_suite != "classical" else ""),
        encoding="utf-8",
    )
    return path


async def provision(deployment: Deployment, target: str, admin_id: str = ADMIN_ID) -> str:
    """As the first administrator: activate the shipped bundle with a signature and sign
    the registry entries bootstrapped from registry.toml, so that nodes can check every
    audience against them. Returns the active policy version."""
    from broker.bundles import read_bundle_dir
    from broker.client.admin import AdminClient

    async with AdminClient(deployment.keys_dir, admin_id, target) as admin:
        result = await admin.activate(read_bundle_dir(REPO_POLICIES), "initial signed policy")
        await admin.sign_registry()
    return result.version
