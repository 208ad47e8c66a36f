"""Which network addresses a URL taken from a task may reach: the one SSRF policy.

Used by the queue agent to fetch inputs and by the webhook deliverer to call
receivers. Both run next to the instance metadata service and the VPC, so a
URL written by a client is hostile until vetted: resolve the name once, refuse
any address that is not globally routable unicast (loopback, private,
link-local, multicast, reserved, shared, the metadata endpoints), then connect
to the address that was vetted (a second resolution could swap in another:
DNS rebinding), sending the host name for SNI, the Host header and the
certificate check.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Callable

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})

Resolver = Callable[[str, int], list[str]]

NOT_PUBLIC_V6 = tuple(
    ipaddress.ip_network(n)
    for n in (
        "2002::/16",  # 6to4: relays reach the embedded IPv4 address, whatever it is (RFC 3056)
        "fec0::/10",  # site-local, deprecated but still routed inside some networks (RFC 3879)
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
        "100::/64",  # discard-only (RFC 6666)
        "2001::/23",  # IETF protocol assignments, Teredo included (RFC 2928, 4380)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # segment routing SIDs (RFC 9602)
    )
)
"""IPv6 ranges of the IANA special-purpose registry that ``ipaddress.is_global`` (Python 3.11) still calls global."""
NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""Well-known NAT64 prefix (RFC 6052): the address is its embedded IPv4 address, judged as such."""
DNS_NAME_ERRORS = frozenset(
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None)) if code is not None
)
"""Resolver answers that say the name does not exist (not that the resolver is unreachable)."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address) and ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses."""
    ip = _ip(address)
    if ip is None or ip in METADATA_ADDRESSES:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in NOT_PUBLIC_V6):
        return False
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def is_loopback_address(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (what local mode's receivers listen on)."""
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def is_ip_literal(host: str) -> bool:
    return _ip(host.strip("[]")) is not None


def host_allowed(host: str, allowed: list[str] | tuple[str, ...] | frozenset[str]) -> bool:
    """Exact match, or ``*.example.com`` matching any subdomain (not the apex). IP literals never."""
    host = host.lower().rstrip(".")
    if is_ip_literal(host):
        return False
    for pattern in allowed:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a pre-vetted IP, with the host name for SNI, Host header and certificate check."""

    def __init__(self, host: str, address: str, port: int, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
