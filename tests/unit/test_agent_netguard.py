"""Address and name checks of the agent's fetcher: IANA special-purpose IPv6 ranges, names that do not exist."""

from __future__ import annotations

import socket

import pytest

from queue_agent.errors import PermanentError, TransientError
from queue_agent.fetch import InputFetcher
from sdeks.netguard import is_public_address


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("2002:c0a8:101::1", False),  # 6to4 around 192.168.1.1
        ("2002:808:808::1", False),  # 6to4 at all: a relay decides where it goes
        ("fec0::1", False),  # site-local
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of the metadata address
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::1", False),  # local-use translation
        ("2001::1", False),  # Teredo
        ("3fff::1", False),  # documentation
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("2606:4700:4700::1111", True),
    ],
)
def test_ipv6_special_purpose_ranges(address, public):
    assert is_public_address(address) is public


def _failing_resolver(code: int):
    def resolve(host: str, port: int) -> list[str]:
        raise socket.gaierror(code, "resolver says no")

    return resolve


def _fetcher(resolver) -> InputFetcher:
    return InputFetcher(s3=None, allowed_buckets=frozenset(), allowed_hosts=("img.example.com",), resolver=resolver)


def test_allowed_host_that_does_not_exist_fails_for_good():
    with pytest.raises(PermanentError, match="does not resolve"):
        _fetcher(_failing_resolver(socket.EAI_NONAME)).fetch("https://img.example.com/a.png")
    with pytest.raises(PermanentError, match="has no address"):
        _fetcher(lambda h, p: []).fetch("https://img.example.com/a.png")


def test_resolver_trouble_stays_transient():
    with pytest.raises(TransientError, match="cannot resolve"):
        _fetcher(_failing_resolver(socket.EAI_AGAIN)).fetch("https://img.example.com/a.png")
