"""MULTIAPPEND (RFC 3502) as a client may send it: each message with its
own optional flags and date-time, or with neither."""

from __future__ import annotations

import socket

import pytest
from tests.e2e.conftest import DOMAIN, Server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


def _append(server: Server, tail: bytes) -> bytes:
    with socket.create_connection((server.host, server.port("imap")), timeout=30) as c:
        r = c.makefile("rb")
        r.readline()
        c.sendall(f"a LOGIN alice@{DOMAIN} alice-pw-1\r\n".encode())
        assert r.readline().startswith(b"a OK")
        c.sendall(b"t APPEND INBOX " + tail + b"\r\n")
        while True:
            line = r.readline()
            if not line or line.startswith(b"t "):
                return line


def test_multiappend_with_flags_on_every_message(server: Server) -> None:
    assert _append(server, b"() {12+}\r\nSubject: a\r\n () {12+}\r\nSubject: b\r\n").startswith(b"t OK")


@pytest.mark.parametrize("tail", [
    b"{12+}\r\nSubject: a\r\n {12+}\r\nSubject: b\r\n",
    b'{12+}\r\nSubject: a\r\n "01-Jan-2020 00:00:00 +0000" {12+}\r\nSubject: b\r\n',
], ids=["bare-literals", "date-without-flags"])
def test_multiappend_without_flags(server: Server, tail: bytes) -> None:
    assert _append(server, tail).startswith(b"t OK")
