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
