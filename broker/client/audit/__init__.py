"""Auditor and witness client (asyncio), and the checks built on it.

:class:`AuditClient` talks to AuditService over mutual TLS as an auditor or an
agency. The checks trust nothing the broker says without verifying it against
:class:`Trust` (the deployment CA, the broker's log key, witness keys):

* :func:`monitor`: follow checkpoints; each new one must be consistent with the
  last one kept on disk (RFC 9162 consistency proof), else it is a fork; one
  older than the one kept is a rollback, one the broker cannot prove consistent
  is unprovable: the state is kept, both signed checkpoints are written beside
  it as evidence. With ``check_entries``
  (auditors) the entries themselves must hash to the checkpoint's root.
* :func:`cosign`: a witness's monitor step, then its cosignature (C2SP
  tlog-cosignature) with the agency's CA-bound signing key.
* :func:`replay`: fetch every entry (checked against a checkpoint), the
  decision records and the policy bundles they name, and re-evaluate.
* :meth:`AuditClient.pod`: a notice's proof-of-delivery bundle (verify it
  with :func:`broker.core.pod.verify_pod`, offline).

The package's modules, each importing only those above it: `trust` (the anchors,
loaded and applied), `client` (AuditClient, AuditFailure), `checkpoints` (monitor,
cosign), `replays` (verified leaves, replay). Import from `broker.client.audit`: this
module re-exports their interface.
"""

from __future__ import annotations

from broker.client.audit.checkpoints import (
    ROLLBACK,
    UNPROVABLE,
    MonitorResult,
    MonitorState,
    cosign,
    monitor,
)
from broker.client.audit.client import (
    PAGE,
    RECORDS_PAGE,
    AuditClient,
    AuditFailure,
)
from broker.client.audit.replays import (
    ReplayResult,
    replay,
    verified_leaves,
)
from broker.client.audit.trust import (
    Trust,
    load_trust,
    now_ms,
)

__all__ = [
    "PAGE",
    "RECORDS_PAGE",
    "ROLLBACK",
    "UNPROVABLE",
    "AuditClient",
    "AuditFailure",
    "MonitorResult",
    "MonitorState",
    "ReplayResult",
    "Trust",
    "cosign",
    "load_trust",
    "monitor",
    "now_ms",
    "replay",
    "verified_leaves",
]
