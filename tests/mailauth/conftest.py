from __future__ import annotations

from collections.abc import Iterator

import pytest

from .dnsserver import DnsServer


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.stop()
