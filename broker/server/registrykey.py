"""The registry's key: one digest of every agency profile, key statement and signed entry.

:func:`registry_key` hashes the agencies in id order; cached decisions and the
directory that nodes hold are keyed by it, so a change to any of them changes the
key. BrokerApp (broker/server/app.py) recomputes it on every registry reload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from broker.core.relay import RegisteredAgency


def registry_key(agencies: Iterable[RegisteredAgency]) -> str:
    """A digest of the registry: every profile the policy reads, key statement and signed
    entry. Decisions cached under one key are never reused once any of them changed, and
    nodes holding the directory of another key fetch it again (GetDirectory)."""
    h = hashlib.sha256()
    for a in sorted(agencies, key=lambda a: a.profile.id):
        p = a.profile
        h.update(
            repr(
                (
                    p.id,
                    p.country,
                    sorted(p.roles),
                    sorted(p.groups),
                    sorted(p.purposes),
                    p.status,
                    p.organisation,
                )
            ).encode()
        )
        h.update(hashlib.sha256(a.statement).digest())
        h.update(hashlib.sha256(a.signed_entry or b"").digest())
    return h.hexdigest()[:32]
