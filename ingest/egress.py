"""Egress policy: which addresses an image URL may make this service connect to.

Image URLs come from shops, i.e. from outside. Fetching whatever they name would let an event
read cloud metadata (169.254.169.254), admin ports on localhost or anything on the private
network, and use our failure details as a port scanner. So by default only public unicast
addresses are allowed: loopback, private, link-local, multicast, reserved, unspecified,
carrier-grade NAT, unique-local and site-local IPv6, and IPv6 forms that embed IPv4
(mapped, 6to4, NAT64, Teredo) are refused. Deployments whose CDN is internal list it in
``LOOKALIKE_IMAGES__ALLOW_NETWORKS`` (CIDRs) or ``__ALLOW_HOSTS`` (host names).

:meth:`EgressPolicy.resolve` resolves a host name once and checks *every* address it
resolves to; the fetcher then connects to one of those checked addresses itself (no second
DNS lookup, so a rebinding DNS server cannot switch the answer between check and connect).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

from schema.errors import ItemError, Reason

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

_BLOCKED: tuple[Network, ...] = tuple(
    ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches localhost on Linux
        "100.64.0.0/10",  # carrier-grade NAT; also Alibaba's metadata 100.100.100.200
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast
        "198.18.0.0/15",  # benchmarking
        "64:ff9b::/96",  # NAT64: embeds an IPv4 address
        "64:ff9b:1::/48",  # local NAT64
        "2001::/32",  # Teredo: embeds an IPv4 address
        "2002::/16",  # 6to4: embeds an IPv4 address
        "2001:20::/28",  # ORCHIDv2
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
        "fec0::/10",  # deprecated site-local
    )
)


def is_public(ip: Address) -> bool:
    """Whether ``ip`` is a public unicast address (the only kind allowed by default)."""
    if isinstance(ip, IPv6Address):
        embedded = ip.ipv4_mapped
        if embedded is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
            return is_public(embedded)
        if ip.scope_id:
            return False
    if (
        not ip.is_global
        or ip.is_multicast
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return False
    return not any(ip.version == net.version and ip in net for net in _BLOCKED)


class EgressPolicy:
    """Decides and resolves destinations; immutable and thread-safe."""

    def __init__(
        self, allow_networks: Sequence[str | Network] = (), allow_hosts: Sequence[str] = ()
    ) -> None:
        self._networks = tuple(
            n if isinstance(n, IPv4Network | IPv6Network) else ip_network(n, strict=False)
            for n in allow_networks
        )
        self._hosts = frozenset(_normal_host(h) for h in allow_hosts)

    def allows(self, host: str, ip: Address) -> bool:
        """Whether connecting to ``ip`` (one address of ``host``) is allowed."""
        if _normal_host(host) in self._hosts:
            return True
        candidates: list[Address] = [ip]
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if any(c.version == n.version and c in n for c in candidates for n in self._networks):
            return True
        return is_public(ip)

    def resolve(self, host: str, port: int) -> list[Address]:
        """Every address ``host`` resolves to, each checked; refuses the host if any one is
        not allowed (a mixed answer is how rebinding attacks start). The detail never names
        the internal address, so refusals do not map the private network for the sender."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise ItemError(Reason.UNREACHABLE, f"{host}: name does not resolve") from None
        addresses: list[Address] = []
        for family, _type, _proto, _name, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            # A scoped IPv6 address ("fe80::1%eth0") keeps its scope: is_public refuses it.
            ip = ip_address(str(sockaddr[0]))
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise ItemError(Reason.UNREACHABLE, f"{host}: name does not resolve")
        if not all(self.allows(host, ip) for ip in addresses):
            raise ItemError(
                Reason.ADDRESS_NOT_ALLOWED,
                f"{host} is not an allowed destination (see LOOKALIKE_IMAGES__ALLOW_NETWORKS)",
            )
        return addresses


def _normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")
