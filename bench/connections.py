"""Idle IMAP connections: memory per connection held in IDLE (SPEC section 3).

Usage::

    python -m bench.connections [--connections 10000] [--accounts 100]
                                [--workers 2] [--json] [--tracemalloc]

Starts a standalone ``dynamail serve`` on 127.0.13.1 (``--port-offset``,
default 30000), creates ``--accounts`` accounts (connections share them,
round-robin), then opens ``--connections`` IMAP connections from
``--workers`` client processes.  Each connection sends LOGIN, SELECT INBOX
and IDLE pipelined in one write and counts as established when the ``+``
continuation of IDLE arrives.  Client connections are spread over source
addresses 127.0.13.2, 127.0.13.3, ... (at most ``--per-address`` each: the
server limits connections per client address, and each source address has
its own ephemeral ports).  ``RLIMIT_NOFILE`` is raised for this process,
the server and the workers (they inherit it).

Measured:

* the server's RSS (and USS/PSS) after one connection per account is in IDLE
  (accounts open, credentials cache warm) and again after all connections
  are; the difference divided by the added connections is the cost of one
  idle IMAP connection (kernel socket buffers are not part of RSS);
* time to establish all connections (and the rate);
* server CPU while everything idles (10 s);
* IDLE wake-up: ``--rounds`` times, a separate connection APPENDs to one
  account; every IDLE session of that account must report ``* n EXISTS``.
  Latency is from the APPEND's tagged OK (and, separately, from sending the
  APPEND) to each session's EXISTS arriving (CLOCK_MONOTONIC is shared by
  all processes); p50/p99 over all woken sessions of all rounds.

``--tls`` holds the idle connections on IMAPS (implicit TLS, the server's
self-signed certificate) instead of plain IMAP.

``--json`` adds the run to ``bench/results/connections.json`` (one entry
per connection count, plain or TLS).

``--tracemalloc`` starts the server with ``DYNAMAIL_TRACEMALLOC`` set (see
:mod:`dynamail.net.memtrace`), takes a snapshot at both RSS points and
prints the allocation sites that grew most per added connection (slow; use
a few thousand connections).

Everything runs on loopback, every phase has a deadline, and the script
stops the server and its workers by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from bench.server import dynamail_server

DOMAIN = "conns.test"
PASSWORD = "bench-pw"
HOST = "127.0.13.1"
SOURCE_PREFIX = "127.0.13."
FIRST_SOURCE = 2
NOFILE = 200_000
RESULTS = Path(__file__).parent / "results" / "connections.json"


def user(i: int) -> str:
    return f"u{i:04d}@{DOMAIN}"


def raise_nofile(n: int = NOFILE) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- client worker processes ---------------------------------------------------


class Idler(asyncio.Protocol):
    """One client connection: LOGIN+SELECT+IDLE pipelined, then watch EXISTS."""

    __slots__ = ("account", "buf", "ready", "transport", "watch", "woke")

    def __init__(self, account: int, ready: asyncio.Future[bool], woke: list[tuple[int, float]]) -> None:
        self.account = account
        self.ready: asyncio.Future[bool] | None = ready
        self.woke = woke
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.watch = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(  # type: ignore[union-attr]
            b"a LOGIN " + user(self.account).encode() + b" " + PASSWORD.encode()
            + b"\r\nb SELECT INBOX\r\nc IDLE\r\n"
        )

    def data_received(self, data: bytes) -> None:
        if self.ready is not None:
            self.buf += data
            if b"\r\n+ " in self.buf or self.buf.startswith(b"+ "):
                self.ready.set_result(True)
                self.ready = None
                self.buf = b""
            elif b"\r\na NO" in self.buf or b"\r\nb NO" in self.buf or b"BYE" in self.buf:
                self.ready.set_result(False)
                self.ready = None
            return
        if self.watch and b" EXISTS\r\n" in data:
            self.woke.append((self.account, time.monotonic()))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(False)
            self.ready = None


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's certificate is self-signed
    return ctx


async def open_many(port: int, jobs: list[tuple[int, str]], concurrency: int, deadline: float,
                    conns: list[Idler], woke: list[tuple[int, float]], tls: bool = False) -> int:
    """Open a connection per (account, source address); returns failures."""
    loop = asyncio.get_running_loop()
    tls_ctx = client_tls() if tls else None
    sem = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(account: int, source: str) -> None:
        nonlocal failed
        async with sem:
            ready: asyncio.Future[bool] = loop.create_future()
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: Idler(account, ready, woke), HOST, port, local_addr=(source, 0),
                        ssl=tls_ctx,
                    ),
                    max(1.0, deadline - time.time()),
                )
                ok = await asyncio.wait_for(ready, max(1.0, deadline - time.time()))
            except (OSError, TimeoutError):
                failed += 1
                return
            if ok:
                conns.append(proto)
            else:
                failed += 1
                if proto.transport is not None:
                    proto.transport.close()

    await asyncio.gather(*(one(a, s) for a, s in jobs))
    return failed


async def worker_main(pipe: Pipe, port: int, tls: bool) -> None:
    loop = asyncio.get_running_loop()
    conns: list[Idler] = []
    woke: list[tuple[int, float]] = []
    while True:
        msg = await loop.run_in_executor(None, pipe.recv)
        op = msg[0]
        if op == "open":
            _, jobs, concurrency, deadline = msg  # jobs: [(account, source address)]
            t0 = time.monotonic()
            had = len(conns)
            failed = await open_many(port, jobs, concurrency, deadline, conns, woke, tls)
            pipe.send(("opened", len(conns) - had, failed, time.monotonic() - t0))
        elif op == "watch":
            woke.clear()
            for c in conns:
                c.watch = True
            pipe.send(("watching",))
        elif op == "woke":
            pipe.send(("woke", list(woke)))
            woke.clear()
        elif op == "close":
            for c in conns:
                if c.transport is not None:
                    c.transport.abort()
            conns.clear()
            pipe.send(("closed",))
            return


def worker_entry(pipe: Pipe, port: int, tls: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop

        uvloop.run(worker_main(pipe, port, tls))
    except ImportError:
        asyncio.run(worker_main(pipe, port, tls))


class Workers:
    def __init__(self, n: int, port: int, tls: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.procs: list[Any] = []
        for _ in range(n):
            a, b = ctx.Pipe()
            p = ctx.Process(target=worker_entry, args=(b, port, tls), daemon=True)
            p.start()
            self.pipes.append(a)
            self.procs.append(p)

    def ask(self, msgs: list[tuple[Any, ...]], timeout: float) -> list[tuple[Any, ...]]:
        for pipe, m in zip(self.pipes, msgs, strict=True):
            pipe.send(m)
        out = []
        deadline = time.monotonic() + timeout
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("a client worker did not answer in time")
            out.append(pipe.recv())
        return out

    def broadcast(self, m: tuple[Any, ...], timeout: float) -> list[tuple[Any, ...]]:
        return self.ask([m] * len(self.pipes), timeout)

    def rss(self) -> int:
        import psutil

        total = 0
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(p.pid).memory_info().rss
        return total

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.broadcast(("close",), 60)
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def open_phase(workers: Workers, accounts: list[int], first: int, per_address: int,
               concurrency: int, timeout: float) -> tuple[int, int, float]:
    """Open one connection per entry of ``accounts`` (connection numbers from
    ``first``), split over the workers; returns (opened, failed, seconds)."""
    n = len(workers.pipes)
    jobs: list[list[tuple[int, str]]] = [[] for _ in range(n)]
    for k, acc in enumerate(accounts):
        idx = first + k
        src = SOURCE_PREFIX + str(FIRST_SOURCE + idx // per_address)
        jobs[k % n].append((acc, src))
    deadline = time.time() + timeout
    t0 = time.monotonic()
    answers = workers.ask(
        [("open", j, max(1, concurrency // n), deadline) for j in jobs], timeout + 30
    )
    opened = sum(a[1] for a in answers)
    failed = sum(a[2] for a in answers)
    return opened, failed, time.monotonic() - t0


# -- the server ----------------------------------------------------------------


@contextlib.contextmanager
def server(tmp: Path, accounts: int, offset: int, trace: Path | None):  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    if trace is not None:
        env["DYNAMAIL_TRACEMALLOC"] = str(trace)
        env["DYNAMAIL_TRACEMALLOC_FRAMES"] = "12"
    with dynamail_server(
        tmp, host=HOST, domain=DOMAIN, password=PASSWORD,
        users=(user(i).split("@")[0] for i in range(accounts)), offset=offset, env=env,
        start_timeout=60, poll=0.2, stop_timeout=60,
    ) as running:
        yield running


def memory(pid: int) -> dict[str, int]:
    import psutil

    p = psutil.Process(pid)
    out = {"rss": p.memory_info().rss}
    with contextlib.suppress(psutil.Error, AttributeError):
        full = p.memory_full_info()
        out["uss"] = full.uss
        if hasattr(full, "pss"):
            out["pss"] = full.pss
    return out


def cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def snapshot(proc: subprocess.Popen[bytes], trace: Path, name: str) -> Path:
    """Ask the server for a tracemalloc snapshot (SIGUSR2) and wait for it."""
    target = trace.with_name(trace.name + "." + name)
    with contextlib.suppress(FileNotFoundError):
        trace.unlink()
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if trace.exists():
            time.sleep(1)
            size = trace.stat().st_size
            time.sleep(1)
            if size == trace.stat().st_size:
                trace.rename(target)
                return target
        time.sleep(0.5)
    raise TimeoutError("no tracemalloc snapshot from the server")


def _short(fr: Any) -> str:
    return f"{fr.filename.split('site-packages/')[-1].split('src/')[-1].split('python3.11/')[-1]}:{fr.lineno}"


def trace_report(before: Path, after: Path, added: int, top: int = 30) -> list[dict[str, Any]]:
    """Growth between two snapshots per added connection, grouped by the
    allocating line and the innermost dynamail frame that led to it."""
    import tracemalloc
    from collections import defaultdict

    a = tracemalloc.Snapshot.load(str(before))
    b = tracemalloc.Snapshot.load(str(after))
    grouped: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for s in b.compare_to(a, "traceback"):
        frames = list(s.traceback)  # oldest first
        inner = _short(frames[-1])
        ours = next((_short(f) for f in reversed(frames) if "dynamail/" in f.filename), "-")
        g = grouped[(inner, ours)]
        g[0] += s.size_diff
        g[1] += s.count_diff
    total = sum(g[0] for g in grouped.values())
    print(f"\ntracemalloc: {total / max(1, added):.0f} bytes per added connection traced by Python; "
          f"top sites (bytes and blocks per connection; allocating line <- innermost dynamail frame):")
    rows = []
    for (inner, ours), (size, count) in sorted(grouped.items(), key=lambda kv: -kv[1][0])[:top]:
        per = size / max(1, added)
        blocks = count / max(1, added)
        print(f"  {per:8.1f} B  {blocks:5.2f} blk  {inner}  <-  {ours}")
        rows.append({"site": inner, "from": ours, "bytes_per_conn": round(per, 1),
                     "blocks_per_conn": round(blocks, 2)})
    return rows


# -- the wake-up probe ---------------------------------------------------------


async def appender(port: int, rounds: int, accounts: int) -> list[tuple[int, float, float]]:
    """APPEND one message to ``rounds`` different accounts from a connection of
    their own; returns (account, sent, tagged OK) monotonic times."""
    msg = (
        f"From: a@example.org\r\nTo: x@{DOMAIN}\r\nSubject: wake\r\n"
        "Message-ID: <wake@example.org>\r\n\r\nwake up\r\n"
    ).encode()
    out = []
    for r in range(rounds):
        acc = (r * 7) % accounts
        reader, writer = await asyncio.open_connection(HOST, port, local_addr=(SOURCE_PREFIX + "200", 0))
        try:
            await reader.readline()
            writer.write(b"a LOGIN " + user(acc).encode() + b" " + PASSWORD.encode() + b"\r\n")
            while not (await reader.readline()).startswith(b"a "):
                pass
            writer.write(b"b APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
            sent = time.monotonic()
            while True:
                line = await asyncio.wait_for(reader.readline(), 30)
                if line.startswith(b"b "):
                    if not line.startswith(b"b OK"):
                        raise RuntimeError(f"APPEND failed: {line!r}")
                    break
            out.append((acc, sent, time.monotonic()))
            writer.write(b"c LOGOUT\r\n")
            await asyncio.sleep(1.0)  # let every session of the account wake
        finally:
            writer.close()
    return out


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]


# -- main ----------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    ap.add_argument("--concurrency", type=int, default=400, help="connections being set up at once")
    ap.add_argument("--per-address", type=int, default=900, help="connections per source address")
    ap.add_argument("--port-offset", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=20, help="APPENDs for the wake-up measurement")
    ap.add_argument("--idle-seconds", type=float, default=10.0, help="CPU measured while idle")
    ap.add_argument("--timeout", type=float, default=900.0, help="deadline for establishing")
    ap.add_argument("--tls", action="store_true", help="idle connections on IMAPS (993 + offset)")
    ap.add_argument("--tracemalloc", action="store_true", help="tracemalloc snapshots in the server")
    ap.add_argument("--json", action="store_true", help=f"write {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    args = ap.parse_args()
    sources = math.ceil(args.connections / args.per_address)
    if FIRST_SOURCE + sources > 199:
        ap.error("too many source addresses needed; raise --per-address (server limit permitting)")
    nofile = raise_nofile(args.connections + 10_000)
    if nofile < args.connections + 1000:
        raise SystemExit(
            f"RLIMIT_NOFILE is {nofile} and cannot be raised (the hard limit needs CAP_SYS_RESOURCE): "
            f"the server cannot hold {args.connections} connections; use --connections "
            f"{max(0, nofile - 2000)} or raise the hard limit (ulimit -Hn, prlimit, LimitNOFILE=)"
        )
    print(f"RLIMIT_NOFILE {nofile}; {args.connections} connections over {sources} source addresses, "
          f"{args.accounts} accounts, {args.workers} client processes")

    with tempfile.TemporaryDirectory(prefix="dynamail-conns-") as tmpdir:
        tmp = Path(tmpdir)
        trace = tmp / "trace.snap" if args.tracemalloc else None
        t_start = time.monotonic()
        with server(tmp, args.accounts, args.port_offset, trace) as (proc, port):
            print(f"server pid {proc.pid} on {HOST}:{port} (set up in {time.monotonic() - t_start:.1f} s)")
            workers = Workers(args.workers, port + 993 - 143 if args.tls else port, args.tls)
            try:
                result = run(args, proc, port, workers, trace)
            finally:
                workers.stop()
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["command"] = "python -m bench.connections " + " ".join(sys.argv[1:])
    print(f"load average {result['load_average']}")
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        runs: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            runs = json.loads(RESULTS.read_text())
        if "connections" in runs:  # a single run written by an older version
            runs = {str(runs["connections"]): runs}
        key = str(result["connections"]) + (" tls" if result["tls"] else "")
        runs[key] = result  # one entry per connection count (and TLS or not)
        RESULTS.write_text(json.dumps(runs, indent=2) + "\n")
        print(f"wrote {RESULTS}")


def run(args: argparse.Namespace, proc: subprocess.Popen[bytes], port: int, workers: Workers,
        trace: Path | None) -> dict[str, Any]:
    n, c = args.accounts, args.connections
    # warm-up: one connection per account (accounts open, credentials cached)
    opened, failed, secs = open_phase(workers, list(range(min(n, c))), 0, args.per_address,
                                      min(n, args.concurrency), args.timeout)
    if failed:
        raise SystemExit(f"warm-up: {failed} connections failed (see the server log)")
    time.sleep(2)
    before = memory(proc.pid)
    snap_a = snapshot(proc, trace, "before") if trace else None
    if snap_a:
        time.sleep(1)
        before = memory(proc.pid)
    print(f"warm-up: {opened} connections in {secs:.1f} s; server RSS {before['rss'] / 2**20:.1f} MiB")

    rest = [i % n for i in range(opened, c)]
    t0 = time.monotonic()
    added, failed, secs = open_phase(workers, rest, opened, args.per_address, args.concurrency, args.timeout)
    setup = time.monotonic() - t0
    total = opened + added
    print(f"opened {added} more connections in {setup:.1f} s ({added / setup:.0f}/s); {failed} failed")
    time.sleep(3)
    after = memory(proc.pid)
    snap_b = snapshot(proc, trace, "after") if trace else None
    per = {k: (after[k] - before[k]) / max(1, added) for k in after if k in before}
    print(f"{total} connections in IDLE: server RSS {after['rss'] / 2**20:.1f} MiB; per added connection: "
          + ", ".join(f"{k.upper()} {v / 1024:.2f} KiB" for k, v in per.items()))
    client_rss = workers.rss()
    print(f"client processes RSS {client_rss / 2**20:.1f} MiB")

    cpu0 = cpu_seconds(proc.pid)
    time.sleep(args.idle_seconds)
    idle_cpu = (cpu_seconds(proc.pid) - cpu0) / args.idle_seconds * 100

    workers.broadcast(("watch",), 30)
    appends = asyncio.run(asyncio.wait_for(appender(port, args.rounds, n), 60 + 30 * args.rounds))
    time.sleep(1)
    woke: list[tuple[int, float]] = []
    for ans in workers.broadcast(("woke",), 60):
        woke.extend(ans[1])
    per_account = {a: 0 for a in range(n)}
    for i in range(total):
        per_account[i % n] += 1
    expected = sum(per_account[a] for a, _, _ in appends)
    from_ok: list[float] = []
    from_sent: list[float] = []
    # match each EXISTS to the round of its account that came just before it
    for acc, t in woke:
        rounds = [(s, ok) for a, s, ok in appends if a == acc and s <= t]
        if not rounds:
            continue
        s, ok = max(rounds)
        from_sent.append(t - s)
        from_ok.append(max(0.0, t - ok))
    print(f"IDLE wake-up: {len(from_ok)} of {expected} sessions woken over {args.rounds} APPENDs; "
          f"from the APPEND's OK p50 {pct(from_ok, .5) * 1000:.2f} ms p99 {pct(from_ok, .99) * 1000:.2f} ms; "
          f"from sending the APPEND p50 {pct(from_sent, .5) * 1000:.2f} ms p99 {pct(from_sent, .99) * 1000:.2f} ms")
    print(f"server CPU while idle: {idle_cpu:.1f} %")
    result: dict[str, Any] = {
        "connections": total,
        "tls": bool(args.tls),
        "failed": failed,
        "accounts": n,
        "server_rss_before": before["rss"],
        "server_rss_after": after["rss"],
        "bytes_per_connection": {k: round(v) for k, v in per.items()},
        "setup_seconds": round(setup, 2),
        "setup_rate": round(added / setup),
        "client_rss": client_rss,
        "idle_cpu_percent": round(idle_cpu, 2),
        "wake_sessions": len(from_ok),
        "wake_expected": expected,
        "wake_p50_ms": round(pct(from_ok, .5) * 1000, 2),
        "wake_p99_ms": round(pct(from_ok, .99) * 1000, 2),
        "wake_from_send_p50_ms": round(pct(from_sent, .5) * 1000, 2),
        "wake_from_send_p99_ms": round(pct(from_sent, .99) * 1000, 2),
    }
    if snap_a and snap_b:
        result["tracemalloc"] = trace_report(snap_a, snap_b, added)
    return result


if __name__ == "__main__":
    main()
