"""Clients of the broker: the agency SDK (`AgencyNode`)."""

from broker.client.node import AgencyNode, NodeConfig, PublishedNotice, ReceivedNotice

__all__ = ["AgencyNode", "NodeConfig", "PublishedNotice", "ReceivedNotice"]
