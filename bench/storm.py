"""Cold login storm: many accounts logging in at once to a server that knows none of them.

Usage: ``python -m bench.storm [--accounts 2000] [--clients 100] [--only dynamail|dovecot]``

What users meet after a failover or a restart.  ``--clients`` concurrent
clients work through ``--accounts`` accounts; each account connects, logs
in once and logs out.  The figure is the time from the first connection to
the last successful LOGIN, with the LOGIN latency distribution, the
server's CPU and its peak RSS (sampled every 50 ms).

Runs, one after the other on the same machine:

1. ``dynamail cold``: a fresh ``dynamail serve`` with default settings;
   every account has an argon2id hash with the default ``[auth]``
   parameters (one hash string stored for every account, so that creating
   2,000 accounts does not take a minute; the verification work per login
   is the same as with distinct salts).  No credentials verifier exists yet:
   every login costs one argon2 verification.
2. ``dynamail restart``: the same server stopped and started again (every
   in-memory cache empty); the keyed verifiers the first run left beside the
   accounts let it accept each login with one HMAC — the case of a
   failover, where the survivors read the verifiers the failed member wrote.
3. ``dovecot``: Dovecot 2.3 (``/usr/sbin/dovecot``, as root) with the same
   accounts in a passwd-file with one ``{SHA512-CRYPT}`` hash (5,000
   rounds), processes reused (``service_count = 0``), no auth cache.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tempfile
import threading
import time
from pathlib import Path

from bench.imap import HOST, PASSWORD, Imap, cpu_seconds, dovecot_server, pct
from bench.server import create_accounts, serve

DOMAIN = "bench.test"


class PeakRss:
    """Peak RSS of a process tree, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> PeakRss:
        self.start_rss = self._sample()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


async def storm(port: int, users: list[str], clients: int) -> dict[str, float]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for u in users:
        queue.put_nowait(u)
    logins: list[float] = []
    failures = 0

    async def client(i: int) -> None:
        nonlocal failures
        while True:
            try:
                user = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            for _attempt in range(3):
                try:
                    c = await Imap.connect(HOST, port, source=f"127.0.4.{100 + i % 50}")
                    try:
                        t0 = time.perf_counter()
                        tagged, _ = await c.cmd(b"LOGIN " + user.encode() + b" " + PASSWORD.encode())
                        if b" OK" not in tagged[:20]:
                            raise ConnectionError(tagged.decode(errors="replace"))
                        logins.append(time.perf_counter() - t0)
                        await c.cmd(b"LOGOUT")
                    finally:
                        c.close()
                    break
                except (ConnectionError, OSError, asyncio.IncompleteReadError):
                    failures += 1
                    await asyncio.sleep(0.1)

    t0 = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.monotonic() - t0
    return {"seconds": elapsed, "logins": len(logins), "failures": failures,
            "p50": pct(logins, 0.5), "p99": pct(logins, 0.99), "max": max(logins, default=0) * 1000}


def measure(name: str, pid: int, port: int, users: list[str], clients: int) -> dict[str, float]:
    cpu0 = cpu_seconds(pid)
    with PeakRss(pid) as rss:
        row = asyncio.run(storm(port, users, clients))
    row["cpu"] = cpu_seconds(pid) - cpu0
    row["rss0"] = rss.start_rss / 2**20
    row["rss_peak"] = rss.peak / 2**20
    print(f"{name}: {row['logins']:.0f}/{len(users)} logged in in {row['seconds']:.1f} s "
          f"({row['logins'] / row['seconds']:.0f} logins/s), LOGIN p50 {row['p50']:.0f} ms "
          f"p99 {row['p99']:.0f} ms max {row['max']:.0f} ms, server CPU {row['cpu']:.1f} s, "
          f"RSS {row['rss0']:.0f} -> peak {row['rss_peak']:.0f} MiB, retried {row['failures']:.0f}",
          flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--only", choices=("dynamail", "dovecot"))
    args = ap.parse_args()
    users = [f"u{i}" for i in range(args.accounts)]
    random.seed(1)
    offset = random.randint(20000, 40000)
    print(f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}; {os.cpu_count()} cores", flush=True)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="stormbench") as t:
        tmp = Path(t)
        if args.only != "dovecot":
            from dynamail.directory import passwords

            argon = passwords.default_hasher().hash(PASSWORD)
            create_accounts(tmp / "dynamail", DOMAIN, PASSWORD, users, stored_hash=argon)
            with serve(tmp, host=HOST, domain=DOMAIN, offset=offset) as (proc, port):
                results["dynamail cold (argon2id m=19MiB t=2)"] = measure(
                    "dynamail cold", proc.pid, port, users, args.clients)
            with serve(tmp, host=HOST, domain=DOMAIN, offset=offset) as (proc, port):
                results["dynamail restart (verifiers)"] = measure(
                    "dynamail restart", proc.pid, port, users, args.clients)
        if args.only != "dynamail" and os.path.exists("/usr/sbin/dovecot") and os.geteuid() == 0:
            with dovecot_server(tmp, users, offset + 1000, "sha512-crypt") as (dproc, port):
                results["Dovecot {SHA512-CRYPT}"] = measure("dovecot", dproc.pid, port, users, args.clients)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("\n| run | time until all in (s) | logins/s | LOGIN p50 / p99 ms | server CPU s | RSS start / peak MiB |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['seconds']:.1f} | {r['logins'] / r['seconds']:.0f} | {r['p50']:.0f} / {r['p99']:.0f} "
              f"| {r['cpu']:.1f} | {r['rss0']:.0f} / {r['rss_peak']:.0f} |")


if __name__ == "__main__":
    main()
