"""Prometheus metrics of the broker (served on a local port, see broker.toml)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RPCS = Counter("broker_rpcs_total", "RPCs handled", ["method", "code"])
PUBLISHED = Counter("broker_notices_published_total", "Notice versions accepted")
DUPLICATES = Counter("broker_publish_duplicates_total", "Idempotent re-publishes")
DELIVERIES = Counter("broker_deliveries_sent_total", "Deliveries sent (including redeliveries)")
RECEIPTS = Counter("broker_receipts_accepted_total", "Verified receipts stored")
DEAD_LETTERS = Counter("broker_dead_letters_total", "Deliveries given up after max attempts")
WITHHELD = Counter("broker_deliveries_withheld_total", "Deliveries withheld at forwarding time")
SUBSCRIBERS = Gauge("broker_subscribers", "Open Subscribe streams")
COMMIT_SECONDS = Histogram(
    "broker_publish_seconds",
    "Publish latency until durable",
    buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2),
)

# + fair sharing (broker/server/quotas.py): per agency, bounded by the registry
QUOTA_ADMITTED = Counter(
    "broker_quota_admitted_total",
    "Units admitted under an agency's quotas (envelopes, bytes, lookups)",
    ["agency", "quota"],
)
QUOTA_REFUSALS = Counter(
    "broker_quota_refusals_total",
    "Calls refused RESOURCE_EXHAUSTED by an agency's rate limit or quota",
    ["agency", "quota"],
)
QUEUED_DELIVERIES = Gauge(
    "broker_agency_queued_deliveries",
    "Deliveries of the agency's notices not yet delivered (last store count)",
    ["agency"],
)
PUBLISH_CHECKS = Counter(
    "broker_publish_checks_total", "Envelopes put through the publish checks (policy included)"
)
REPUBLISHES = Counter(
    "broker_republishes_answered_total",
    "Envelopes of a re-publish answered from the stored outcome, without checks",
)
TASKS = Gauge("broker_asyncio_tasks", "asyncio tasks alive in the broker's event loop")
