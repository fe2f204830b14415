from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from dynamail.directory import Directory

from .dnsserver import DnsServer


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.stop()


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    return Directory(tmp_path / "base", main_domain="main.example",
                     password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
