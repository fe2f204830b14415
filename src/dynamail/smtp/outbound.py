"""Sending one queued message to one remote domain (the I/O half of the client).

Routing (RFC 5321 5.1): the configured relay host, else the static MX map
(``[smtp] mx = {domain = "host:port"}``), else the domain's MX records
(dnspython, asynchronous) in preference order, the domain itself when it has
no MX (implicit MX), and a permanent failure for a null MX (RFC 7505) or a
domain that does not exist.  Each host is tried in turn until one gives
every recipient an answer; the protocol decisions are made by the sans-IO
:class:`~dynamail.smtp.client.ClientTransaction`.  Like the adapter, this
module does I/O; the protocol cores beside it do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from dynamail.smtp.client import ClientTransaction, Outcome, ProtocolError, ReplyReader, Step
from dynamail.smtp.dots import Stuffer

log = logging.getLogger("dynamail.smtp.outbound")

CONNECT_TIMEOUT = 30.0
# RFC 5321 4.5.3.2: 5 minutes for most replies, 10 for the end of DATA
REPLY_TIMEOUT = 300.0
DATA_END_TIMEOUT = 600.0
SEND_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Route:
    hosts: list[tuple[str, int]]
    failure: Outcome | None = None  # permanent or temporary failure of routing itself


def _host_port(text: str, default: int = 25) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else default
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host:
        return host, int(port)
    return text, default


async def route(domain: str, relay_host: str, mx_map: dict[str, str]) -> Route:
    if relay_host:
        return Route([_host_port(relay_host)])
    static = mx_map.get(domain) or mx_map.get(domain.lower())
    if static:
        return Route([_host_port(part) for part in static.split(",") if part.strip()])
    try:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver
    except ImportError:  # pragma: no cover - dnspython is a dependency
        return Route([], Outcome(451, "4.4.3 DNS resolver not available"))
    try:
        answer = await dns.asyncresolver.resolve(domain, "MX", lifetime=30.0)
    except dns.resolver.NXDOMAIN:
        return Route([], Outcome(550, f"5.1.2 domain {domain} does not exist"))
    except dns.resolver.NoAnswer:
        return Route([(domain, 25)])  # implicit MX (RFC 5321 5.1)
    except dns.exception.DNSException as exc:
        return Route([], Outcome(451, f"4.4.3 DNS lookup for {domain} failed: {exc.__class__.__name__}"))
    records = sorted(((r.preference, str(r.exchange).rstrip(".")) for r in answer), key=lambda x: x[0])
    if len(records) == 1 and records[0][1] in ("", "."):
        return Route([], Outcome(556, f"5.1.10 domain {domain} accepts no mail (null MX)"))
    return Route([(host, 25) for _, host in records if host not in ("", ".")])


def _client_tls() -> ssl.SSLContext:
    # opportunistic TLS (RFC 3207 4.1): encrypt when offered, do not authenticate
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _read_reply(reader: asyncio.StreamReader, rr: ReplyReader, timeout: float):  # type: ignore[no-untyped-def]
    while True:
        reply = rr.next_reply()
        if reply is not None:
            return reply
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            raise ConnectionError("connection closed by server")
        rr.feed(data)


async def send_to_host(
    host: str, port: int, tx: ClientTransaction, message: Path,
) -> None:
    """Run ``tx`` against one host; outcomes are recorded in ``tx``."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
    rr = ReplyReader()
    try:
        while tx.step is not Step.DONE:
            timeout = DATA_END_TIMEOUT if tx.step is Step.CONTENT else REPLY_TIMEOUT
            reply = await _read_reply(reader, rr, timeout)
            out = tx.on_reply(reply)
            if tx.step is Step.STARTTLS and reply.code == 220:
                await writer.start_tls(_client_tls(), server_hostname=host)
                out = tx.tls_started()
            if out:
                writer.write(out)
                await writer.drain()
            if tx.step is Step.CONTENT:
                await _send_content(writer, message)
            if tx.step is Step.QUIT and out == b"QUIT\r\n":
                # the answer to QUIT does not matter
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_read_reply(reader, rr, 5.0), 5.0)
                break
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 5.0)


async def _send_content(writer: asyncio.StreamWriter, message: Path) -> None:
    stuffer = Stuffer()
    with open(message, "rb") as fh:
        while True:
            chunk = fh.read(SEND_CHUNK)
            if not chunk:
                break
            writer.write(stuffer.feed(chunk))
            await writer.drain()
    writer.write(stuffer.end())
    await writer.drain()


def _is_eightbit(message: Path) -> bool:
    with open(message, "rb") as fh:
        while True:
            chunk = fh.read(SEND_CHUNK)
            if not chunk:
                return False
            if not chunk.isascii():
                return True


async def send(
    domain: str,
    *,
    helo: str,
    sender: str,
    recipients: list[str],
    message: Path,
    relay_host: str = "",
    mx_map: dict[str, str] | None = None,
) -> dict[str, Outcome]:
    """Deliver to ``recipients`` (all in ``domain``); an outcome for each."""
    r = await route(domain, relay_host, mx_map or {})
    if r.failure is not None:
        return {rcpt: r.failure for rcpt in recipients}
    size = message.stat().st_size
    eightbit = await asyncio.get_running_loop().run_in_executor(None, _is_eightbit, message)
    utf8 = not (sender.isascii() and all(x.isascii() for x in recipients))
    last = Outcome(451, f"4.4.1 no answer from any host for {domain}")
    for host, port in r.hosts:
        tx = ClientTransaction(
            helo=helo, sender=sender, recipients=list(recipients), size=size,
            tls_possible=True, eightbit=eightbit, utf8=utf8,
        )
        try:
            await send_to_host(host, port, tx, message)
        except (OSError, TimeoutError, ProtocolError, ssl.SSLError, ConnectionError) as exc:
            log.info("delivery to %s via %s:%d failed: %s", domain, host, port, exc)
            last = Outcome(451, f"4.4.1 {host}:{port}: {exc.__class__.__name__} {exc}".strip())
            if not tx.accepted or tx.step not in (Step.CONTENT, Step.QUIT, Step.DONE):
                continue  # nothing committed: try the next host
            tx.unfinished(last.code, last.text)
            return dict(tx.outcomes)
        tx.unfinished(451, "4.4.2 connection ended early")
        if tx.error is not None and tx.error.code < 500 and not tx.accepted:
            last = tx.error
            continue  # a temporary refusal of the whole session: next MX
        return dict(tx.outcomes)
    return {rcpt: last for rcpt in recipients}
