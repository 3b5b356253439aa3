"""Clients of the broker: the agency SDK (`AgencyNode`)."""

from broker.client.node import (
    AgencyNode,
    LifecycleNotice,
    NodeConfig,
    PublishedNotice,
    ReceivedNotice,
)

__all__ = ["AgencyNode", "LifecycleNotice", "NodeConfig", "PublishedNotice", "ReceivedNotice"]
