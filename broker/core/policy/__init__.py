"""Sharing policy: catalogue of notice kinds, groups, rules; compiled once, evaluated per
(recipient, section). Default deny; forbid overrides permit; decisions are values."""

from broker.core.policy.bundle import Bundle, PolicyError, compile_bundle
from broker.core.policy.model import (
    AgencyProfile,
    Decision,
    KindSpec,
    NoticeFacts,
    RecipientDecision,
)

__all__ = [
    "AgencyProfile",
    "Bundle",
    "Decision",
    "KindSpec",
    "NoticeFacts",
    "PolicyError",
    "RecipientDecision",
    "compile_bundle",
]
