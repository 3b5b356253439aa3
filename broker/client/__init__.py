"""Clients of the broker: the agency SDK (`AgencyNode`)."""

from broker.client.node import (
    AgencyNode,
    Draft,
    LifecycleNotice,
    NodeConfig,
    PublishedNotice,
    ReceivedNotice,
)

__all__ = [
    "AgencyNode",
    "Draft",
    "LifecycleNotice",
    "NodeConfig",
    "PublishedNotice",
    "ReceivedNotice",
]
