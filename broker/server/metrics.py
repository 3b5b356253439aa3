"""Prometheus metrics of the broker (served on a local port, see broker.toml)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from broker.store.api import LeasedDelivery

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

# + judicial: how long each signed priority waits, from acceptance to its first hand-over
DELIVERY_WAIT = Histogram(
    "broker_delivery_wait_seconds",
    "Time from a notice's acceptance to the first lease of each delivery, by signed priority",
    ["priority"],
    buckets=(0.01, 0.1, 1, 10, 60, 600, 3600, 86400),
)
PRIORITY_LABELS = {0: "normal", 1: "urgent"}


_WAITS = {p: DELIVERY_WAIT.labels(label) for p, label in PRIORITY_LABELS.items()}


def observe_waits(leased: Sequence[LeasedDelivery], now_ms: int) -> None:
    """Record the wait of each first attempt (redeliveries waited already)."""
    for d in leased:
        if d.attempt == 1 and d.accepted_at_ms:
            _WAITS.get(d.priority, _WAITS[0]).observe(max(now_ms - d.accepted_at_ms, 0) / 1000)


# Gauges read from the store when /metrics is scraped (broker/server/opsport.py).
PENDING = Gauge(
    "broker_deliveries_pending", "Deliveries waiting to be sent or receipted (pending, in flight)"
)
EMBARGOED = Gauge("broker_deliveries_embargoed", "Pending deliveries held by an embargo")
DEAD = Gauge("broker_deliveries_dead", "Dead letters: deliveries given up, not yet resolved")
OLDEST_WAITING = Gauge(
    "broker_deliveries_oldest_waiting_seconds", "Age of the oldest delivery still waiting"
)
OVERDUE_REPLIES = Gauge("broker_replies_overdue", "Replies past their respond-by time")
LOG_SIZE = Gauge("broker_log_size", "Entries in the transparency log")
LOG_HEAD_AGE = Gauge(
    "broker_log_head_age_seconds", "Seconds since the newest signed checkpoint was issued"
)
LOG_COSIGNED = Gauge(
    "broker_log_head_cosignatures", "Witness cosignatures on the newest signed checkpoint"
)
CERT_EXPIRY = Gauge(
    "broker_certificate_expiry_seconds", "Seconds until the broker's own TLS certificate expires"
)
READY = Gauge("broker_ready", "1 while the broker serves and its store answers, else 0")


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
