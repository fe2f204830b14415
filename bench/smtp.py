"""SMTP delivery benchmark: messages per second durably delivered.

Starts a real ``dynamail serve`` on a loopback address with a fresh base
directory, then delivers N messages over C concurrent SMTP connections —
with Postfix's ``smtp-source`` when it is installed, and with the project's
own asyncio generator (always; it can spread messages over several
accounts).  Every message counts only when the server answered 250, which
it sends only after the copy is durable (fsync) on storage.

The disk's fsync rate is measured in the same run, on the same file system
as the base directory, the way the storage benchmark does it: write 4 KiB,
fsync, repeated.  The ratio messages/s ÷ fsyncs/s shows how far group
commit gets beyond one fsync per message.

    .venv/bin/python bench/smtp.py --messages 2000 --concurrency 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import poplib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from dynamail.smtp.limits import MAX_CONNECTIONS_PER_ADDRESS  # noqa: E402
from smtp.live import LiveServer, prepare  # noqa: E402


def fsync_rate(directory: Path, seconds: float = 2.0) -> float:
    """fsyncs per second: write 4 KiB then fsync, repeated for ``seconds``."""
    path = directory / "fsync-probe"
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        n = 0
        start = time.perf_counter()
        while True:
            os.write(fd, block)
            os.fsync(fd)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return n / elapsed
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def body(size: int, i: int) -> bytes:
    head = f"From: bench@outside.example\r\nTo: x\r\nSubject: bench {i}\r\nMessage-ID: <{i}.{time.time()}@bench>\r\n\r\n"
    line = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    payload = line * max(size // len(line), 1)
    return head.encode() + payload


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def _connection(host: str, port: int, jobs: asyncio.Queue[tuple[int, str]], size: int, done: list[int], source: str) -> None:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    await _reply(reader)
    writer.write(b"EHLO bench.example\r\n")
    await _reply(reader)
    while True:
        try:
            i, rcpt = jobs.get_nowait()
        except asyncio.QueueEmpty:
            break
        data = body(size, i)
        # PIPELINING: MAIL, RCPT and DATA in one write
        writer.write(b"MAIL FROM:<bench@outside.example>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode())
        codes = [await _reply(reader) for _ in range(3)]
        if codes != [250, 250, 354]:
            raise RuntimeError(f"unexpected replies {codes}")
        writer.write(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        if await _reply(reader) == 250:
            done.append(i)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def own_generator(host: str, port: int, n: int, c: int, size: int, recipients: list[str]) -> tuple[int, float]:
    jobs: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for i in range(n):
        jobs.put_nowait((i, recipients[i % len(recipients)]))
    done: list[int] = []
    start = time.perf_counter()
    # the server allows MAX_CONNECTIONS_PER_ADDRESS (20) sessions per client
    # address: spread the connections over several loopback source addresses
    sources = [f"127.0.12.{200 + i // MAX_CONNECTIONS_PER_ADDRESS}" for i in range(c)]
    await asyncio.gather(*(_connection(host, port, jobs, size, done, src) for src in sources))
    return len(done), time.perf_counter() - start


def smtp_source(host: str, port: int, n: int, c: int, size: int, rcpt: str) -> tuple[int, float] | None:
    exe = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source") else None)
    if exe is None:
        return None
    if c > MAX_CONNECTIONS_PER_ADDRESS:
        print(f"smtp-source skipped: more than {MAX_CONNECTIONS_PER_ADDRESS} sessions from one address are refused (421)")
        return None
    start = time.perf_counter()
    run = subprocess.run(
        [exe, "-d", "-s", str(c), "-m", str(n), "-l", str(size), "-f", "bench@outside.example",
         "-t", rcpt, "-M", "bench.example", f"{host}:{port}"],
        capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        print("smtp-source failed:", run.stderr.strip(), file=sys.stderr)
        return None
    return n, elapsed


def stored_messages(srv: LiveServer, accounts: list[str]) -> int:
    """Count what the accounts hold (over POP3), to check every 250 was real."""
    from smtp.live import client_tls

    total = 0
    for address in accounts:
        p = poplib.POP3_SSL(srv.host, srv.port("pop3s"), context=client_tls(), timeout=60)
        p.user(address)
        p.pass_("pw")
        total += p.stat()[0]
        p.quit()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", "-n", type=int, default=2000)
    ap.add_argument("--concurrency", "-c", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096, help="payload bytes per message")
    ap.add_argument("--accounts", type=int, default=10, help="recipient accounts (own generator)")
    ap.add_argument("--dir", type=Path, default=None, help="where the base directory goes (default: a temporary directory)")
    ap.add_argument("--host", default="127.0.12.240")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (serve --workers; 0 = per core)")
    args = ap.parse_args()

    parent = Path(tempfile.mkdtemp(prefix="dynamail-bench-smtp-", dir=args.dir))
    base = parent / "base"
    accounts = {f"bench{i}@example.org": "pw" for i in range(args.accounts)}
    prepare(base, accounts, toml=f"workers = {args.workers}\n")
    srv = LiveServer(base, args.host)
    srv.start()
    if args.workers != 1:
        time.sleep(3.0)  # the workers elect their Controller
    try:
        rate_before = fsync_rate(parent)
        port = srv.port("smtp")
        results: list[tuple[str, int, float, float]] = []
        assert srv.proc is not None
        proc = psutil.Process(srv.proc.pid)

        def cpu() -> float:  # the server and its workers
            total = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                total += t.user + t.system
            return total

        c0 = cpu()
        ss = smtp_source(args.host, port, args.messages, args.concurrency, args.size, "bench0@example.org")
        if ss is not None:
            results.append(("smtp-source, 1 account", *ss, cpu() - c0))
        elif shutil.which("smtp-source") is None and not os.path.exists("/usr/sbin/smtp-source"):
            print("smtp-source not installed; own generator only")
        c0 = cpu()
        got = asyncio.run(own_generator(args.host, port, args.messages, args.concurrency, args.size, list(accounts)))
        results.append((f"own generator, {args.accounts} accounts", *got, cpu() - c0))
        rate_after = fsync_rate(parent)
        rate = (rate_before + rate_after) / 2
        print(
            f"disk fsync rate (4 KiB write + fsync): {rate:.0f}/s "
            f"(before {rate_before:.0f}/s, after {rate_after:.0f}/s)  [{parent}]"
        )
        stored = stored_messages(srv, list(accounts))
        expected = sum(r[1] for r in results)
        print(f"messages found in the accounts afterwards: {stored} (acknowledged: {expected})")
        for name, n, elapsed, cpu_s in results:
            mps = n / elapsed
            print(
                f"{name}: {n} messages x {args.size} B, {args.concurrency} connections: "
                f"{elapsed:.2f} s, {mps:.0f} messages/s durably delivered, "
                f"{mps / rate:.2f} x the fsync rate, server CPU {cpu_s / max(n, 1) * 1e6:.0f} µs/message"
            )
    finally:
        srv.stop()
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
