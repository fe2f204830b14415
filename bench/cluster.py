"""Cluster benchmarks: failover times with real processes, Controller
placement speed and memory with simulated open accounts.

    .venv/bin/python bench/cluster.py controller [--accounts 1000000]
    .venv/bin/python bench/cluster.py failover [--runs 20]
    .venv/bin/python bench/cluster.py controller-failover [--runs 20]
    .venv/bin/python bench/cluster.py links [--runs 500]

``links`` measures the cluster link itself in one process on 127.0.15.1,
plaintext against TLS (``[cluster] tls``): connection set-up (TCP, TLS 1.2,
the bound handshake) and request/response round trips with a 1 KiB and a
1 MiB payload (a delivery hand-off carries the whole message).

Failover time is measured from the kill -9 of the account's owner to the
first successful IMAP login and SELECT of that account through another
member (a fresh connection per attempt, retrying every 20 ms).  Controller
failover time is measured from the kill -9 of the Controller to the first
successful login of an account that was open nowhere (a new grant, which
only an acting Controller can make).  Clusters run with the launcher's
defaults (T = 1.5 s, m = 0.3 s, heartbeat 0.25 s) on 127.0.9.x.
"""

from __future__ import annotations

import argparse
import gc
import imaplib
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from dynamail.cluster import launcher
from dynamail.cluster.controller import Controller

PREFIX = "127.0.9"
OFFSET = 30000
PASSWORD = "bench-Password-1"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def bench_controller(n: int) -> None:
    c = Controller("b1", 1, 0.0)
    for i in range(2, 6):
        c.heartbeat(f"b{i}", 0.0, ready=True, sessions=0, open_accounts=0, lag_ms=0, cpu=i)
    keys = [f"domain{i % 1000}.test/user{i}" for i in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    c2 = Controller("b1", 1, 0.0)
    for i in range(2, 6):
        c2.heartbeat(f"b{i}", 0.0, ready=True, sessions=0, open_accounts=0, lag_ms=0, cpu=i)
    keys2 = [f"domain{i % 1000}.test/user{i}" for i in range(n)]
    for k in keys2:
        c2.open(k, "b1", 0.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per = (after - before) / n
    del c2, keys2
    gc.collect()
    t0 = time.perf_counter()
    for k in keys:
        c.open(k, "b1", 0.0)
    t_new = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in keys:
        c.open(k, "b2", 0.0)
    t_existing = time.perf_counter() - t0
    t0 = time.perf_counter()
    c.heartbeat("b3", 100.0, ready=True, sessions=0, open_accounts=0, lag_ms=0, cpu=0)
    c.heartbeat("b1", 100.0, ready=True, sessions=0, open_accounts=0, lag_ms=0, cpu=0)
    c.tick(100.0)  # b2, b4, b5 declared dead: their accounts are freed
    t_free = time.perf_counter() - t0
    print(f"open accounts: {n:,}")
    print(f"memory per open account (map, keys included): {per:.0f} bytes")
    print(f"placement + grant of an account open nowhere: {n / t_new:,.0f}/s "
          f"({t_new / n * 1e6:.2f} us each)")
    print(f"lookup of an account already open: {n / t_existing:,.0f}/s "
          f"({t_existing / n * 1e6:.2f} us each)")
    print(f"declaring 3 of 5 members dead (freeing their accounts): {t_free * 1000:.0f} ms")
    from dynamail.cluster.controller import Role

    held = [(k, (1 << 32) | i) for i, k in enumerate(keys)]
    fresh = Controller("b2", 2, 0.0, expected=("b3",))
    t0 = time.perf_counter()
    fresh.resync("b3", 0.0, role=Role.BACKEND, ready=True, sessions=0, version="", accounts=held)
    t_resync = time.perf_counter() - t0
    print(f"new Controller rebuilding its map from one member's Resync of {n:,} accounts: "
          f"{t_resync * 1000:.0f} ms")


def _imap_ok(host: str, port: int, user: str) -> bool:
    try:
        conn = imaplib.IMAP4(host, port, timeout=2)
        try:
            conn.login(user, PASSWORD)
            typ, _ = conn.select("INBOX")
            return typ == "OK"
        finally:
            try:
                conn.logout()
            except Exception:
                pass
    except (imaplib.IMAP4.error, OSError, EOFError):
        return False


def _cli(host: str, port: int, admin: dict[str, str], *commands: str) -> None:
    with socket.create_connection((host, port), timeout=10) as s:
        f = s.makefile("rwb")
        f.readline()
        for c in (f"USER {admin['user']}", f"PASS {admin['password']}", *commands):
            f.write(c.encode() + b"\r\n")
            f.flush()
            line = f.readline()
            if line.startswith(b"200 data follow"):
                f.readline()


def _setup(directory: Path, accounts: int) -> dict:
    data = launcher.up(directory, 3, port_offset=OFFSET, prefix=PREFIX)
    m = data["members"][0]
    cmds = ["CREATEDOMAIN bench.test SHARED"]
    cmds += [f'CREATEACCOUNT u{i}@bench.test {{Password="{PASSWORD}";}}' for i in range(accounts)]
    _cli(m["host"], m["ports"]["cli"], data["admin"], *cmds)
    return data


def _wait_alive(directory: Path, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = launcher.status(directory)
        row = next(r for r in st["members"] if r["name"] == name)
        if row.get("alive") and st["controller"] and st["backup"]:
            return
        time.sleep(0.1)
    raise SystemExit(f"{name} did not re-join")


def bench_failover(runs: int) -> list[float]:
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "c"
        data = _setup(d, 1)
        try:
            members = {m["name"]: m for m in data["members"]}
            for run in range(runs):
                st = launcher.status(d)
                ctl = st["controller"]
                # keep the Controller out of placement so a plain backend owns the account
                launcher.set_ready(d, ctl, False)
                time.sleep(0.6)
                via = ctl  # log in through the Controller: it never owns the account here
                m = members[via]
                if not _imap_ok(m["host"], m["ports"]["imap"], "u0@bench.test"):
                    raise SystemExit("cannot log in before the kill")
                owner = launcher.locate(d, "u0@bench.test")
                if owner in ("", ctl):
                    raise SystemExit(f"unexpected owner {owner!r}")
                launcher.kill(d, owner, "KILL")
                t0 = time.monotonic()
                while not _imap_ok(m["host"], m["ports"]["imap"], "u0@bench.test"):
                    time.sleep(0.02)
                dt = time.monotonic() - t0
                times.append(dt)
                print(f"run {run + 1}: owner {owner} killed, login via {via} after {dt:.3f} s",
                      flush=True)
                launcher.set_ready(d, ctl, True)
                launcher.start(d, owner)
                _wait_alive(d, owner)
        finally:
            launcher.down(d)
    return times


def bench_controller_failover(runs: int) -> list[float]:
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "c"
        data = _setup(d, runs + 1)
        try:
            members = {m["name"]: m for m in data["members"]}
            for run in range(runs):
                st = launcher.status(d)
                ctl = st["controller"]
                via = next(n for n in members if n != ctl)
                m = members[via]
                account = f"u{run + 1}@bench.test"  # open nowhere yet
                launcher.kill(d, ctl, "KILL")
                t0 = time.monotonic()
                while not _imap_ok(m["host"], m["ports"]["imap"], account):
                    time.sleep(0.02)
                dt = time.monotonic() - t0
                times.append(dt)
                print(f"run {run + 1}: controller {ctl} killed, new grant via {via} after {dt:.3f} s",
                      flush=True)
                if dt > 2.5:
                    _explain(d, members)
                launcher.start(d, ctl)
                _wait_alive(d, ctl)
        finally:
            launcher.down(d)
    return times


def _explain(directory: Path, members: dict) -> None:
    """Print the cluster's election log lines of the last seconds (outliers)."""
    for name in members:
        log = directory / "members" / name / "serve.log"
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if "dynamail.cluster" in ln][-6:]
        for ln in lines:
            print(f"    {name}: {ln[:200]}")


def bench_links(runs: int) -> None:
    import asyncio

    from dynamail.cluster import wire
    from dynamail.cluster.peer import accept, client_tls, dial, server_tls
    from dynamail.net.tls import ensure_self_signed

    secret = b"bench-secret-" * 4
    host = "127.0.15.1"

    async def echo(peer: object, msg: wire.Message) -> wire.Message | None:
        if isinstance(msg, wire.Deliver):
            return wire.Delivered(msg.id, len(msg.data))
        return None

    async def run(tls: bool, cert: Path, key: Path) -> None:
        sctx = server_tls(str(cert), str(key)) if tls else None
        cctx = client_tls() if tls else None

        async def on_accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await accept(r, w, "listener", secret, echo)

        server = await asyncio.start_server(on_accept, host, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        setup: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            p = await dial(host, port, "dialer", secret, echo, tls=cctx)
            setup.append(time.perf_counter() - t0)
            p.close()
        p = await dial(host, port, "dialer", secret, echo, tls=cctx)
        label = "TLS 1.2" if tls else "plaintext"
        print(f"{label}: connection set-up p50 {statistics.median(setup) * 1e3:.2f} ms, "
              f"p99 {pct(setup, 99) * 1e3:.2f} ms")
        for size, count in ((1024, runs * 4), (1 << 20, max(runs // 5, 20))):
            data = b"x" * size
            times: list[float] = []
            for _ in range(count):
                t0 = time.perf_counter()
                reply = await p.request(wire.Deliver(p.next_id(), "d/a", "INBOX", (), data))
                times.append(time.perf_counter() - t0)
                assert isinstance(reply, wire.Delivered) and reply.uid == size
            print(f"{label}: round trip with {size} bytes p50 {statistics.median(times) * 1e3:.3f} ms, "
                  f"p99 {pct(times, 99) * 1e3:.3f} ms ({size / statistics.median(times) / 1e6:.0f} MB/s)")
        p.close()
        server.close()

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        ensure_self_signed(cert, key, "bench.test")
        for tls in (False, True):
            asyncio.run(run(tls, cert, key))


def report(label: str, times: list[float]) -> None:
    print(f"{label}: runs {len(times)}, p50 {statistics.median(times):.3f} s, "
          f"p99 {pct(times, 99):.3f} s, max {max(times):.3f} s")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["controller", "failover", "controller-failover", "links"])
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)
    if args.what == "controller":
        bench_controller(args.accounts)
    elif args.what == "links":
        bench_links(args.runs)
    elif args.what == "failover":
        report("backend failover (kill -9 to login elsewhere)", bench_failover(args.runs))
    else:
        report("controller failover (kill -9 to a new grant)", bench_controller_failover(args.runs))


if __name__ == "__main__":
    main(sys.argv[1:])
