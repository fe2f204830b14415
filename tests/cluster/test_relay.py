"""The relaying member's side of a session relay (cluster/relay.py ``relay``)
against scripted owners on loopback: it asks for the owner's challenge and
seals the nonce into the ticket, falls back to the old ticket form when the
owner is of an earlier release, and gives up on an answer that makes no
sense."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from dynamail.cluster.challenge import NO_CHALLENGE, encode_nonce
from dynamail.cluster.relay import relay

NONCE = b"\x01" * 16
Owner = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Client:
    """The client connection at the relaying member: it has sent its login
    and sends nothing more."""

    idle_timeout = 5.0
    peer_host, peer_port = "192.0.2.7", 5555

    def __init__(self) -> None:
        self.sent = b""

    async def read(self, n: int, timeout: float | None = None) -> bytes:
        return b""

    async def send(self, data: bytes) -> None:
        self.sent += data


def _run(owner: Owner, protocol: str) -> tuple[bool, list[bytes], bytes]:
    """relay() against ``owner``: (its verdict, the nonces the ticket was
    made from, what the client was sent)."""
    made: list[bytes] = []

    def ticket(challenge: bytes) -> str:
        made.append(challenge)
        return "the.ticket"

    async def main() -> tuple[bool, bytes]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                await owner(reader, writer)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Client()
        try:
            ok = await relay(client, "127.0.0.1", port, ticket, protocol, b"r1 OK Logged in\r\n",
                             connect_timeout=3.0)
        finally:
            server.close()
        return ok, client.sent

    ok, sent = asyncio.run(main())
    return ok, made, sent


def _imap_owner(challenge_reply: bytes) -> Owner:
    async def owner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK owner ready\r\n")
        assert await reader.readline() == b"R0 XDYNAMAIL-CHALLENGE\r\n"
        if not challenge_reply:
            return  # the owner hangs up
        writer.write(challenge_reply)
        line = await reader.readline()
        if line == b"R1 XDYNAMAIL-RELAY the.ticket\r\n":
            writer.write(b"R1 OK Logged in\r\n")
            await reader.read()  # until the relaying member closes
        await writer.drain()
    return owner


def test_imap_ticket_carries_the_owners_nonce() -> None:
    reply = b"* XDYNAMAIL-CHALLENGE " + encode_nonce(NONCE).encode() + b"\r\nR0 OK done\r\n"
    ok, made, sent = _run(_imap_owner(reply), "imap")
    assert ok and made == [NONCE] and sent == b"r1 OK Logged in\r\n"


def test_imap_owner_of_an_earlier_release_gets_the_old_ticket() -> None:
    for reply in (b"R0 BAD Unknown command\r\n", b"R0 NO not now\r\n", b"R0 NO\r\n"):
        ok, made, _ = _run(_imap_owner(reply), "imap")
        assert ok and made == [NO_CHALLENGE]


@pytest.mark.parametrize("reply", [
    b"R0 OK done\r\n",  # no nonce
    b"* XDYNAMAIL-CHALLENGE !!!notbase64!!!\r\nR0 OK done\r\n",
    b"* XDYNAMAIL-CHALLENGE AAAA\r\nR0 OK done\r\n",  # 24 bits
    b"* XDYNAMAIL-CHALLENGE " + encode_nonce(NONCE).encode() + b"\r\n"
    b"* XDYNAMAIL-CHALLENGE " + encode_nonce(NONCE).encode() + b"\r\nR0 OK done\r\n",  # two
    b"R0 WHAT\r\n",
    b"R0 OKAY\r\n",
    b"* " + b"x" * 10000 + b"\r\n",
    b"",
])
def test_imap_nonsense_from_the_owner_abandons_the_relay(reply: bytes) -> None:
    ok, made, sent = _run(_imap_owner(reply), "imap")
    assert not ok and made == [] and sent == b""


def _pop3_owner(challenge_reply: bytes) -> Owner:
    async def owner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK owner ready\r\n")
        assert await reader.readline() == b"XDYNAMAIL-CHALLENGE\r\n"
        if not challenge_reply:
            return  # the owner hangs up
        writer.write(challenge_reply)
        if await reader.readline() == b"XDYNAMAIL-RELAY the.ticket\r\n":
            writer.write(b"+OK Logged in\r\n")
            await reader.read()
        await writer.drain()
    return owner


def test_pop3_challenge_fallback_and_nonsense() -> None:
    ok, made, _ = _run(_pop3_owner(b"+OK " + encode_nonce(NONCE).encode() + b"\r\n"), "pop3")
    assert ok and made == [NONCE]
    ok, made, _ = _run(_pop3_owner(b"-ERR Unknown command\r\n"), "pop3")
    assert ok and made == [NO_CHALLENGE]
    for reply in (b"+OK\r\n", b"+OK $$$$$$$$$$$$$$$$$$$$$$\r\n", b"+OK a b\r\n", b"* what\r\n", b""):
        ok, made, _ = _run(_pop3_owner(reply), "pop3")
        assert not ok and made == [], reply


def _sieve_owner(challenge_reply: bytes) -> Owner:
    async def owner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'"IMPLEMENTATION" "owner"\r\nOK "ready"\r\n')
        assert await reader.readline() == b"XDYNAMAIL-CHALLENGE\r\n"
        if not challenge_reply:
            return  # the owner hangs up
        writer.write(challenge_reply)
        if await reader.readline() == b'XDYNAMAIL-RELAY "the.ticket"\r\n':
            writer.write(b'OK "Logged in"\r\n')
            await reader.read()
        await writer.drain()
    return owner


def test_managesieve_challenge_fallback_and_nonsense() -> None:
    reply = b'OK (XDYNAMAIL-CHALLENGE "' + encode_nonce(NONCE).encode() + b'")\r\n'
    ok, made, _ = _run(_sieve_owner(reply), "managesieve")
    assert ok and made == [NONCE]
    ok, made, _ = _run(_sieve_owner(b'NO "Unknown command"\r\n'), "managesieve")
    assert ok and made == [NO_CHALLENGE]
    for reply in (b"OK\r\n", b'OK (XDYNAMAIL-CHALLENGE "AAAA")\r\n', b'OK (XDYNAMAIL-CHALLENGE "a b")\r\n',
                  b'BYE "go away"\r\n', b""):
        ok, made, _ = _run(_sieve_owner(reply), "managesieve")
        assert not ok and made == [], reply
