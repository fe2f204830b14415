"""Cluster benchmarks: failover times with real processes, Controller
placement speed and memory with simulated open accounts.

    .venv/bin/python bench/cluster.py controller [--accounts 1000000]
    .venv/bin/python bench/cluster.py failover [--runs 20]
    .venv/bin/python bench/cluster.py controller-failover [--runs 20]
    .venv/bin/python bench/cluster.py links [--runs 500]
    .venv/bin/python bench/cluster.py controller-failover-load [--runs 10]
    .venv/bin/python bench/cluster.py failover-load [--runs 50]

``controller-failover-load`` kills the Controller while six accounts are
busy (APPEND + NOOP in a loop on persistent IMAP sessions) on the other
members, and reports the latency of those operations from 0.5 s before the
kill to 6 s after it, and how many failed (target: none).
``failover-load`` kills (-9) a backend that owns accounts while all six are
busy through random members, ``--runs`` times, and reports per (fault,
account) the time from the kill to the end of the first successful
operation started after it (p50, p99, max; target p99 < 3 s).

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
import contextlib
import gc
import imaplib
import json
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

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


class _Load:
    """One thread per account: a persistent IMAP session through a member
    chosen by ``via(account)``, doing APPEND then NOOP in a loop.  Every
    operation is recorded as (account, start, end, ok); a failed one ends
    the session and the next one starts on a fresh connection."""

    def __init__(self, directory: Path, accounts: list[str], via: Any) -> None:
        import threading

        self.dir = directory
        self.via = via
        self.ops: list[tuple[str, float, float, bool]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(a,), daemon=True) for a in accounts]
        for t in self.threads:
            t.start()

    def _run(self, account: str) -> None:
        conn: imaplib.IMAP4 | None = None
        n = 0
        while not self.stop.is_set():
            t0 = time.monotonic()
            ok = False
            try:
                if conn is None:
                    m = self.via(account)
                    conn = imaplib.IMAP4(m["host"], m["ports"]["imap"], timeout=10)
                    conn.login(account, PASSWORD)
                    conn.select("INBOX")
                n += 1
                typ, _ = conn.append("INBOX", None, None, f"Subject: load {n}\r\n\r\nx\r\n".encode())
                ok = typ == "OK" and conn.noop()[0] == "OK"
            except (imaplib.IMAP4.error, OSError, EOFError):
                ok = False
            self.ops.append((account, t0, time.monotonic(), ok))
            if not ok:
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.shutdown()
                conn = None
                time.sleep(0.02)
            else:
                time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def _members(directory: Path) -> dict[str, Any]:
    return {m["name"]: m for m in launcher.read_cluster(directory)["members"]}


def bench_controller_failover_load(runs: int, accounts: int = 6) -> list[float]:
    """kill -9 of the Controller while every account is busy on the other
    members: latency and failures of their operations during the election."""
    import random

    lat: list[float] = []
    failures = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "c"
        _setup(d, accounts)
        names = [f"u{i}@bench.test" for i in range(accounts)]
        try:
            for run in range(runs):
                st = launcher.status(d)
                ctl = st["controller"]
                members = _members(d)
                others = [n for n in members if n != ctl]
                # the Controller owns nothing of the load: it is Non-Ready
                # while the accounts are placed, and they stay where placed
                launcher.set_ready(d, ctl, False, drain=0.5)
                time.sleep(1.5)
                for a in names:
                    m = members[random.choice(others)]
                    if not _imap_ok(m["host"], m["ports"]["imap"], a):
                        raise SystemExit(f"cannot log in {a}")
                owners = {a: launcher.locate(d, a) for a in names}
                if ctl in owners.values():
                    raise SystemExit(f"the Controller owns an account: {owners}")
                load = _Load(d, names, lambda a, m=members, o=others: m[random.choice(o)])
                time.sleep(2.0)
                t0 = time.monotonic()
                launcher.kill(d, ctl, "KILL")
                time.sleep(6.0)
                load.close()
                window = [o for o in load.ops if o[1] >= t0 - 0.5 and o[1] <= t0 + 6.0]
                run_lat = [o[2] - o[1] for o in window if o[3]]
                run_fail = sum(1 for o in window if not o[3])
                lat += run_lat
                failures += run_fail
                total += len(window)
                print(f"run {run + 1}: controller {ctl} killed; {len(window)} operations on the other "
                      f"members, p99 {pct(run_lat, 99) * 1e3:.0f} ms, max {max(run_lat) * 1e3:.0f} ms, "
                      f"{run_fail} failed", flush=True)
                launcher.start(d, ctl)
                _wait_alive(d, ctl)
                launcher.set_ready(d, ctl, True)
        finally:
            launcher.down(d)
    print(f"controller failover under load: runs {runs}, operations {total}, "
          f"latency p50 {statistics.median(lat) * 1e3:.0f} ms, p99 {pct(lat, 99) * 1e3:.0f} ms, "
          f"max {max(lat) * 1e3:.0f} ms, failed {failures}")
    return lat


def bench_failover_load(faults: int, accounts: int = 6) -> list[float]:
    """kill -9 of a backend that owns accounts while every account is busy
    (sessions through random members): per affected account, the time from
    the kill to the end of the first successful operation started after it."""
    import random

    gaps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "c"
        _setup(d, accounts)
        names = [f"u{i}@bench.test" for i in range(accounts)]
        down: set[str] = set()
        try:
            members = _members(d)
            load = _Load(d, names, lambda a: members[random.choice([n for n in members if n not in down])])
            time.sleep(3.0)
            fault = 0
            while fault < faults:
                ctl = launcher.status(d)["controller"]
                owners = {a: launcher.locate(d, a) for a in names}
                candidates = [n for n in members if n != ctl and n in owners.values()]
                if not candidates:
                    time.sleep(0.5)
                    continue
                fault += 1
                victim = random.choice(candidates)
                affected = [a for a, o in owners.items() if o == victim]
                down.add(victim)
                t0 = time.monotonic()
                launcher.kill(d, victim, "KILL")
                deadline = t0 + 20.0
                got: dict[str, float] = {}
                while len(got) < len(affected) and time.monotonic() < deadline:
                    for a in affected:
                        ends = [o[2] for o in load.ops if o[0] == a and o[3] and o[1] >= t0]
                        if a not in got and ends:
                            got[a] = min(ends) - t0
                    time.sleep(0.05)
                gaps += list(got.values())
                gaps += [20.0] * (len(affected) - len(got))  # censored at the deadline
                print(f"fault {fault}: {victim} killed, {len(affected)} accounts back after "
                      + ", ".join(f"{v:.2f}" for v in sorted(got.values())) + " s", flush=True)
                launcher.start(d, victim)
                _wait_alive(d, victim)
                down.discard(victim)
                time.sleep(1.0)
            load.close()
        finally:
            launcher.down(d)
    print(f"backend failover under load: faults {faults}, (fault, account) pairs {len(gaps)}, "
          f"unavailability p50 {statistics.median(gaps):.2f} s, p99 {pct(gaps, 99):.2f} s, "
          f"max {max(gaps):.2f} s")
    return gaps


def report(label: str, times: list[float]) -> None:
    print(f"{label}: runs {len(times)}, p50 {statistics.median(times):.3f} s, "
          f"p99 {pct(times, 99):.3f} s, max {max(times):.3f} s")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["controller", "failover", "controller-failover", "links",
                                     "controller-failover-load", "failover-load"])
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the measured distribution to this file (for bench/plots.py)")
    args = ap.parse_args(argv)
    series: dict[str, Any] | None = None
    if args.what == "controller":
        bench_controller(args.accounts)
    elif args.what == "links":
        bench_links(args.runs)
    elif args.what == "controller-failover-load":
        lat = bench_controller_failover_load(args.runs)
        series = {"title": "Controller kill -9: operations on the other members", "unit": "ms",
                  "what": "operation latency", "series": {"operations": [x * 1e3 for x in lat]}}
    elif args.what == "failover-load":
        gaps = bench_failover_load(args.runs)
        series = {"title": "backend kill -9 under load", "unit": "s", "target": 3,
                  "what": "unavailability per affected account", "series": {"pairs": gaps}}
    elif args.what == "failover":
        times = bench_failover(args.runs)
        report("backend failover (kill -9 to login elsewhere)", times)
        series = {"title": "backend failover", "unit": "s", "target": 3,
                  "what": "kill -9 to login elsewhere", "series": {"runs": times}}
    else:
        times = bench_controller_failover(args.runs)
        report("controller failover (kill -9 to a new grant)", times)
        series = {"title": "Controller failover", "unit": "s", "target": 3,
                  "what": "kill -9 to a new grant", "series": {"runs": times}}
    if args.json is not None and series is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(series) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
