"""Relaying a client session to the member that owns its account.

The receiving member has authenticated the client; it connects to the
owner's IMAP or POP3 port and, in the not-authenticated state there, sends
``XDYNAMAIL-RELAY <ticket>`` (IMAP: with a tag).  The ticket names the
account and the client's real address and is sealed with the cluster secret:

    ticket = base64url(msgpack([account, client host, client port, time, nonce]))
             "." base64url(HMAC-SHA256(secret, "relay" | payload)[:16])

A ticket is valid for ``RELAY_TICKET_VALIDITY`` seconds of wall-clock time
(it crosses machines; the nonce makes it single-use within that window, so a
captured ticket cannot be replayed).  Once the owner answers OK, the client
is sent ``client_reply`` (the reply to its LOGIN/PASS) and bytes are copied
both ways as they arrive, unbuffered, so IMAP IDLE notifications reach the
client at once.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from dynamail.accounts import AccountRef
from dynamail.cluster import limits

MAX_TICKET = 1024
RELAY_LINE_LIMIT = 8192  # one response line of the owner before the relay is up
RELAY_EARLY_LIMIT = 256 * 1024  # all untagged lines before it (alerts)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketBook:
    """Makes and checks relay tickets; remembers used nonces."""

    def __init__(self, secret: bytes, validity: float = limits.RELAY_TICKET_VALIDITY) -> None:
        self._secret = secret
        self._validity = validity
        self._used: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def _mac(self, payload: bytes) -> bytes:
        # 128 bits of HMAC-SHA256: a ticket must fit a POP3 command line
        # (RFC 2449 section 4: 255 octets)
        return hmac.new(self._secret, b"relay|" + payload, hashlib.sha256).digest()[:16]

    def make(self, ref: AccountRef, client_host: str, client_port: int) -> str:
        payload = msgpack.packb([f"{ref.domain}/{ref.name}", client_host, client_port,
                                 int(time.time()), secrets.token_bytes(12)])
        return _b64(payload) + "." + _b64(self._mac(payload))

    def verify(self, ticket: str | bytes) -> tuple[AccountRef, str, int] | None:
        if isinstance(ticket, bytes):
            try:
                ticket = ticket.decode("ascii")
            except UnicodeDecodeError:
                return None
        if len(ticket) > MAX_TICKET or ticket.count(".") != 1:
            return None
        body, mac = ticket.split(".")
        try:
            payload, tag = _unb64(body), _unb64(mac)
            if not hmac.compare_digest(self._mac(payload), tag):
                return None
            account, host, port, stamp, nonce = msgpack.unpackb(payload)
            domain, name = str(account).split("/", 1)
        except Exception:
            return None
        now = time.time()
        if abs(now - float(stamp)) > self._validity:
            return None
        while self._used and next(iter(self._used.values())) < now - 2 * self._validity:
            self._used.popitem(last=False)
        if nonce in self._used:
            return None
        self._used[nonce] = now
        return AccountRef(domain, name, True), str(host), int(port)


async def _pump_client_to_owner(conn: Any, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await conn.read(65536, timeout=conn.idle_timeout)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(Exception):
        writer.write_eof()


async def _pump_owner_to_client(reader: asyncio.StreamReader, conn: Any) -> None:
    while True:
        data = await reader.read(65536)
        if not data:
            break
        await conn.send(data)


async def _managesieve_lines(reader: asyncio.StreamReader, first: bytes, timeout: float) -> bytes | None:
    """Read a ManageSieve response up to its OK/NO/BYE line; that line, or None."""
    line, total = first, 0
    while True:
        if not line:
            return None
        total += len(line)
        if total > RELAY_EARLY_LIMIT:
            return None
        if line[:2].upper() == b"OK" or line[:2].upper() == b"NO" or line[:3].upper() == b"BYE":
            return line
        line = await asyncio.wait_for(reader.readline(), timeout)


async def _managesieve_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, greeting: bytes,
                             ticket: str, tls: ssl.SSLContext | None, host: str, timeout: float
                             ) -> tuple[bool, asyncio.StreamReader, asyncio.StreamWriter]:
    """RFC 5804: greeting (capabilities, OK), STARTTLS when the cluster runs
    TLS (capabilities again), then ``XDYNAMAIL-RELAY "<ticket>"``."""
    end = await _managesieve_lines(reader, greeting, timeout)
    if end is None or not end.upper().startswith(b"OK"):
        return False, reader, writer
    if tls is not None:
        writer.write(b"STARTTLS\r\n")
        end = await _managesieve_lines(reader, await asyncio.wait_for(reader.readline(), timeout), timeout)
        if end is None or not end.upper().startswith(b"OK"):
            return False, reader, writer
        await writer.start_tls(tls, server_hostname=host)
        end = await _managesieve_lines(reader, await asyncio.wait_for(reader.readline(), timeout), timeout)
        if end is None or not end.upper().startswith(b"OK"):
            return False, reader, writer
    writer.write(b'XDYNAMAIL-RELAY "' + ticket.encode() + b'"\r\n')
    end = await _managesieve_lines(reader, await asyncio.wait_for(reader.readline(), timeout), timeout)
    return end is not None and end.upper().startswith(b"OK"), reader, writer


async def relay(conn: Any, host: str, port: int, ticket: str, protocol: str,
                client_reply: bytes, connect_timeout: float = 3.0,
                tls: ssl.SSLContext | None = None,
                owner_gone: Callable[[], Awaitable[None]] | None = None,
                goodbye: bytes = b"") -> bool:
    """Open the relayed session at the owner; False if the owner refused
    (the caller then answers the client with a temporary failure).  With
    ``tls``, ``port`` is the owner's implicit-TLS port (IMAPS, POP3S).
    ``owner_gone`` returns once the owner no longer holds the account (it
    died or was paused past its lease and the account was freed): the
    client is then told ``goodbye`` and the relay ends, so that it
    reconnects to the account's next owner at once instead of waiting on a
    silent one."""
    try:
        # ManageSieve has no implicit-TLS port: its relay upgrades with STARTTLS
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=None if protocol == "managesieve" else tls),
            connect_timeout)
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    try:
        greeting = await asyncio.wait_for(reader.readline(), connect_timeout)
        if not greeting:
            return False
        early = b""  # untagged responses of the owner's login ([ALERT]s): the client's
        if protocol == "imap":
            writer.write(b"R1 XDYNAMAIL-RELAY " + ticket.encode() + b"\r\n")
            while True:
                line = await asyncio.wait_for(reader.readline(), connect_timeout)
                if not line:
                    return False
                if line.startswith(b"R1 "):
                    ok = line[3:5].upper() == b"OK"
                    break
                if len(line) > RELAY_LINE_LIMIT or len(early) > RELAY_EARLY_LIMIT:
                    return False
                early += line
        elif protocol == "managesieve":
            ok, reader, writer = await _managesieve_relay(reader, writer, greeting, ticket, tls, host,
                                                          connect_timeout)
        else:
            writer.write(b"XDYNAMAIL-RELAY " + ticket.encode() + b"\r\n")
            line = await asyncio.wait_for(reader.readline(), connect_timeout)
            ok = line.startswith(b"+OK")
        if not ok:
            return False
        # untagged lines precede the tagged completion of the client's LOGIN
        await conn.send(early + client_reply)
        up = asyncio.ensure_future(_pump_client_to_owner(conn, writer))
        down = asyncio.ensure_future(_pump_owner_to_client(reader, conn))
        tasks = {up, down}
        gone = asyncio.ensure_future(owner_gone()) if owner_gone is not None else None
        if gone is not None:
            tasks.add(gone)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if gone is not None and gone.done() and not gone.cancelled() and gone.exception() is None:
                if goodbye:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.send(goodbye), 1.0)
            elif up.done() and not down.done():
                # client finished sending: let the owner's last replies through
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(down), 5.0)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return True
    except (OSError, TimeoutError, ConnectionError):
        return False
    finally:
        writer.close()
