"""Sharing policy: catalogue of notice kinds, groups, rules; compiled once, evaluated per
(recipient, section). Default deny; forbid overrides permit; decisions are values.

    bundle = compile_bundle(files)                  # {relative path: bytes}
    bundle.check_notice(facts)                      # KindSpec, or PolicyError
    bundle.audience(facts, registry, now_ms=now)    # [RecipientDecision], originator excluded
    bundle.decide(facts, profile, now_ms=now)       # RecipientDecision

See policies/README.md for the bundle format and the semantics.
"""

from broker.core.policy.bundle import Bundle, PolicyError, bundle_version, compile_bundle
from broker.core.policy.engine import Outcome, RegistryIndex
from broker.core.policy.model import (
    AgencyProfile,
    Decision,
    KindSpec,
    NoticeFacts,
    Obligation,
    RecipientDecision,
    Restrictions,
)

__all__ = [
    "AgencyProfile",
    "Bundle",
    "Decision",
    "KindSpec",
    "NoticeFacts",
    "Obligation",
    "Outcome",
    "PolicyError",
    "RecipientDecision",
    "RegistryIndex",
    "Restrictions",
    "bundle_version",
    "compile_bundle",
]
