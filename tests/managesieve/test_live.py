"""ManageSieve against a real listener: ``sieve-connect`` (Debian) and a
scripted client over STARTTLS with SASL PLAIN; a script uploaded this way
then filters a message delivered over SMTP."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest

from smtp.live import client_tls, in_process, next_host, prepare

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("managesieve")]

BOB, PW = "bob@example.org", "bob-secret"
SCRIPT = 'require ["fileinto", "mailbox"];\nif header :contains "subject" "report" { fileinto :create "Reports"; }\n'


class Client:
    """A minimal ManageSieve client (RFC 5804) on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    async def response(self) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.r.readline(), 10)
            if not line:
                return lines
            if line.rstrip().endswith(b"}") and b"{" in line:
                n = int(line[line.rindex(b"{") + 1:line.rindex(b"}")].rstrip(b"+"))
                line = line + await self.r.readexactly(n) + await self.r.readline()
            lines.append(line)
            if line.startswith((b"OK", b"NO", b"BYE")):
                return lines

    async def command(self, data: bytes) -> list[bytes]:
        self.w.write(data + b"\r\n")
        await self.w.drain()
        return await self.response()


async def scripted(host: str, port: int) -> list[list[bytes]]:
    reader, writer = await asyncio.open_connection(host, port)
    c = Client(reader, writer)
    out = [await c.response()]
    out.append(await c.command(b"STARTTLS"))
    await writer.start_tls(client_tls())
    out.append(await c.response())  # capabilities again (RFC 5804 2.2)
    token = base64.b64encode(f"\0{BOB}\0{PW}".encode())
    out.append(await c.command(b'AUTHENTICATE "PLAIN" "' + token + b'"'))
    body = SCRIPT.encode()
    out.append(await c.command(b'PUTSCRIPT "filters" {%d+}\r\n' % len(body) + body))
    out.append(await c.command(b'PUTSCRIPT "broken" "fileinto \\"x\\";"'))
    out.append(await c.command(b'SETACTIVE "filters"'))
    out.append(await c.command(b"LISTSCRIPTS"))
    out.append(await c.command(b'GETSCRIPT "filters"'))
    out.append(await c.command(b'DELETESCRIPT "filters"'))
    out.append(await c.command(b"LOGOUT"))
    writer.close()
    return out


def test_scripted_client_and_delivery(tmp_path: Path) -> None:
    base = tmp_path / "base"
    prepare(base, {BOB: PW})
    host = next_host()

    async def run() -> tuple[list[list[bytes]], list[str]]:
        async with in_process(base, host, ("managesieve", "smtp")) as (ctx, ports):
            out = await scripted(host, ports["managesieve"])

            def send() -> None:
                with smtplib.SMTP(host, ports["smtp"], timeout=20) as s:
                    s.sendmail("alice@outside.example", [BOB],
                               b"From: alice@outside.example\r\nSubject: monthly report\r\n\r\nnumbers\r\n")
            await asyncio.get_running_loop().run_in_executor(None, send)
            async with ctx.accounts.use(ctx.directory.find_account(BOB)) as placement:
                boxes = [m.name for m in await placement.store.list_mailboxes()]
                status = await placement.store.status("Reports")
                assert status.messages == 1
            return out, boxes

    out, boxes = asyncio.run(run())
    greeting, starttls, again, auth, put, broken, active, listing, get, delete, logout = out
    assert greeting[-1].startswith(b"OK") and b'"STARTTLS"\r\n' in greeting and b'"SASL" ""\r\n' in greeting
    assert starttls == [b'OK "Begin TLS negotiation now"\r\n']
    assert b'"SASL" "PLAIN"\r\n' in again and again[-1] == b'OK "TLS active"\r\n'
    assert auth == [b'OK "Logged in"\r\n']
    assert put == [b"OK\r\n"]
    assert broken == [b'NO "line 1: fileinto requires the \'fileinto\' extension"\r\n']
    assert active == [b"OK\r\n"]
    assert listing == [b'"filters" ACTIVE\r\n', b"OK\r\n"]
    assert get == [b"{%d}\r\n" % len(SCRIPT) + SCRIPT.encode() + b"\r\n", b"OK\r\n"]
    assert delete == [b'NO (ACTIVE) "The active script cannot be deleted"\r\n']
    assert logout == [b'OK "Logout"\r\n']
    assert "Reports" in boxes


@pytest.mark.skipif(shutil.which("sieve-connect") is None, reason="sieve-connect (Debian) is not installed")
def test_sieve_connect(tmp_path: Path) -> None:
    base = tmp_path / "base"
    prepare(base, {BOB: PW})
    host = next_host()
    local = tmp_path / "vacation.sieve"
    local.write_text('require "vacation";\nvacation :days 3 "Away until Monday.";\n')
    fetched = tmp_path / "fetched.sieve"

    def connect(port: int, *action: str) -> subprocess.CompletedProcess[str]:
        rfd, wfd = os.pipe()
        os.write(wfd, PW.encode() + b"\n")
        os.close(wfd)
        try:
            return subprocess.run(
                ["sieve-connect", "--server", host, "--port", str(port), "--user", BOB,
                 "--passwordfd", str(rfd), "--notlsverify", "--authmech", "PLAIN", *action],
                capture_output=True, text=True, timeout=60, pass_fds=(rfd,),
            )
        finally:
            os.close(rfd)

    async def run() -> list[subprocess.CompletedProcess[str]]:
        async with in_process(base, host, ("managesieve",)) as (_ctx, ports):
            port = ports["managesieve"]
            loop = asyncio.get_running_loop()
            steps = [
                ("--upload", "--localsieve", str(local), "--remotesieve", "away"),
                ("--activate", "--remotesieve", "away"),
                ("--list",),
                ("--download", "--remotesieve", "away", "--localsieve", str(fetched)),
                ("--checkscript", "--localsieve", str(local)),
                ("--deactivate",),
                ("--delete", "--remotesieve", "away"),
                ("--list",),
            ]
            return [await loop.run_in_executor(None, lambda a=a: connect(port, *a)) for a in steps]

    results = asyncio.run(run())
    for r in results:
        assert r.returncode == 0, r.stdout + r.stderr
    assert results[2].stdout == '"away" ACTIVE\n'
    assert fetched.read_text() == local.read_text()
    assert "away" not in results[7].stdout


def test_tls_needed_for_plain(tmp_path: Path) -> None:
    base = tmp_path / "base"
    prepare(base, {BOB: PW})
    host = next_host()

    async def run() -> list[bytes]:
        async with in_process(base, host, ("managesieve",)) as (_ctx, ports):
            reader, writer = await asyncio.open_connection(host, ports["managesieve"])
            c = Client(reader, writer)
            await c.response()
            token = base64.b64encode(f"\0{BOB}\0{PW}".encode())
            out = await c.command(b'AUTHENTICATE "PLAIN" "' + token + b'"')
            writer.close()
            return out

    assert asyncio.run(run()) == [b'NO (ENCRYPT-NEEDED) "Authentication requires TLS"\r\n']


def test_plaintext_login_follows_the_setting(tmp_path: Path) -> None:
    base = tmp_path / "base"
    prepare(base, {BOB: PW}, "[managesieve]\nallow_plaintext_login = true\n")
    host = next_host()

    async def run() -> tuple[list[bytes], list[bytes]]:
        async with in_process(base, host, ("managesieve",)) as (_ctx, ports):
            reader, writer = await asyncio.open_connection(host, ports["managesieve"])
            c = Client(reader, writer)
            greeting = await c.response()
            token = base64.b64encode(f"\0{BOB}\0{PW}".encode())
            out = await c.command(b'AUTHENTICATE "PLAIN" "' + token + b'"')
            writer.close()
            return greeting, out

    greeting, out = asyncio.run(run())
    assert b'"SASL" "PLAIN"\r\n' in greeting
    assert out == [b'OK "Logged in"\r\n']


def test_plain_login_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain user name resolves by the login rules of every door
    (docs/directory.md, "Login names"): user%domain, the domain that lists
    the address the client connected to in IPAddresses, DefaultLoginDomain."""
    monkeypatch.setattr("dynamail.managesieve.adapter.AUTH_FAILURE_DELAY", 0.0)
    base = tmp_path / "base"
    prepare(base, {BOB: PW}, "[managesieve]\nallow_plaintext_login = true\n")
    host = next_host()

    async def attempt(port: int, user: str) -> list[bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        c = Client(reader, writer)
        await c.response()
        token = base64.b64encode(f"\0{user}\0{PW}".encode())
        out = await c.command(b'AUTHENTICATE "PLAIN" "' + token + b'"')
        writer.close()
        return out

    async def run() -> list[list[bytes]]:
        async with in_process(base, host, ("managesieve",)) as (ctx, ports):
            port = ports["managesieve"]
            out = [await attempt(port, "bob"), await attempt(port, "bob%example.org")]
            ctx.directory.update_server_domain_defaults({"DefaultLoginDomain": "example.org"})
            out.append(await attempt(port, "bob"))
            ctx.directory.update_server_domain_defaults({"DefaultLoginDomain": "default"})
            ctx.directory.update_domain_settings("example.org", {"IPAddresses": [host]})
            out.append(await attempt(port, "bob"))
            return out

    plain, percent, by_default, by_address = asyncio.run(run())
    assert plain[-1].startswith(b"NO")  # bob is no account of the Main Domain
    assert percent == by_default == by_address == [b'OK "Logged in"\r\n']
