"""Where a client connects: one broker, or several replicas of one broker.

`NodeConfig.broker` is either one ``host:port`` or a comma-separated list of
replica addresses, ``10.0.0.1:7443,10.0.0.2:7443`` (IP addresses, IPv6 ones in
brackets), which gRPC's own ``ipv4:``/``ipv6:`` resolvers take. With the
``pick_first`` policy the channel uses the first replica that answers and moves
to the next when it fails; with ``round_robin`` calls are spread over all that
answer. Replicas share one broker identity, so the name checked against their
TLS certificate is the first address's host, which every replica's certificate
must carry (``broker keys issue broker ID --ip ...``).
"""

from __future__ import annotations

import ipaddress

from broker.errors import InvalidArgument

LB_POLICIES = ("pick_first", "round_robin")


def _host(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidArgument(f"broker address {address!r} must be host:port")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def channel_target(broker: str, lb_policy: str = "pick_first") -> tuple[str, list[tuple[str, str]]]:
    """The gRPC target and the channel options that go with it.

    Raises InvalidArgument for an unknown policy, a malformed address, or a list of
    replicas that are not all IP addresses of one family (gRPC resolves a list only so).
    """
    if lb_policy not in LB_POLICIES:
        raise InvalidArgument(
            f"lb_policy must be one of {', '.join(LB_POLICIES)}, not {lb_policy!r}"
        )
    addresses = [a.strip() for a in broker.split(",") if a.strip()]
    if not addresses:
        raise InvalidArgument("no broker address given: use host:port")
    options = [("grpc.lb_policy_name", lb_policy)]
    if len(addresses) == 1:
        return addresses[0], options
    hosts = [_host(a) for a in addresses]
    try:
        versions = {ipaddress.ip_address(h).version for h in hosts}
    except ValueError as exc:
        raise InvalidArgument(
            f"several broker replicas must be given as IP addresses ({exc}); for names, "
            "use one DNS name that resolves to every replica"
        ) from exc
    if len(versions) != 1:
        raise InvalidArgument("broker replicas must all be IPv4 or all be IPv6 addresses")
    scheme = "ipv4" if versions == {4} else "ipv6"
    options.append(("grpc.ssl_target_name_override", hosts[0]))
    return f"{scheme}:{','.join(addresses)}", options
