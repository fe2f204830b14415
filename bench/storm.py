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
2b. ``dynamail provisioned``: a fresh server on an empty base, the accounts
   created through its CLI port with their passwords (``CREATEACCOUNT
   u@domain {Password=...}``, as an operator provisions users; the set-up
   time is printed, not measured), then restarted so that every memory cache
   is empty: first logins ever, but the server wrote each account's
   verifier when it set the password.
3. ``dovecot``: Dovecot 2.3 (``/usr/sbin/dovecot``, as root) with the same
   accounts in a passwd-file with one ``{SHA512-CRYPT}`` hash (5,000
   rounds), processes reused (``service_count = 0``), no auth cache.

``--failover`` measures the failover storm instead, on a local cluster of
three backends (the launcher's defaults): ``--accounts`` shared accounts
(default argon2id hashes) each hold one IMAP session, logged in and INBOX
selected, all through backend b1 (which authenticates them and relays each
to its owner).  b1 is killed (-9); every client reconnects through b2 and b3
in turn and logs in again.  The figure is the time from the kill until every
client is logged in with INBOX selected, with the distribution per client.
b2 and b3 never verified these passwords: with keyed verifiers (default)
they accept each with one HMAC; the run is repeated on a fresh cluster with
``[auth] verifier_seconds = 0``, where every re-login costs an argon2 hash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

from bench.imap import HOST, PASSWORD, Imap, cpu_seconds, dovecot_server, pct, wait_serving
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


def provision(host: str, offset: int, users: list[str], connections: int = 4) -> float:
    """Create ``users`` through the CLI port of a running server, each with
    ``PASSWORD``, over ``connections`` connections; the seconds it took."""

    def create(chunk: list[str]) -> None:
        with socket.create_connection((host, 106 + offset), timeout=300) as s:
            f = s.makefile("rb")
            f.readline()
            for line in ("USER postmaster", "PASS x", *(
                    f'CREATEACCOUNT {u}@{DOMAIN} {{Password="{PASSWORD}";}}' for u in chunk)):
                s.sendall(line.encode() + b"\r\n")
                reply = f.readline().decode(errors="replace")
                if not reply.startswith(("200", "300")):
                    raise RuntimeError(f"{line.split()[0]}: {reply.strip()}")

    t0 = time.monotonic()
    deadline = t0 + 60
    while True:  # the first, until the server (every worker) takes it
        try:
            create(users[:1])
            break
        except (RuntimeError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    rest = users[1:]
    threads = [threading.Thread(target=create, args=(rest[i::connections],)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


async def _session(host: str, port: int, user: str, source: str) -> Imap:
    c = await Imap.connect(host, port, source=source)
    tagged, _ = await c.cmd(b"LOGIN " + user.encode() + b" " + PASSWORD.encode())
    if b" OK" not in tagged[:20]:
        c.close()
        raise ConnectionError(tagged.decode(errors="replace"))
    tagged, _ = await c.cmd(b"SELECT INBOX")
    if b" OK" not in tagged[:20]:
        c.close()
        raise ConnectionError(tagged.decode(errors="replace"))
    return c


async def failover_storm(d: Path, users: list[str], concurrency: int = 100) -> dict[str, float]:
    from dynamail.cluster import launcher

    info = {m["name"]: m for m in json.loads(launcher.cluster_file(d).read_text())["members"]}
    victim, survivors = "b1", ["b2", "b3"]
    vhost, vport = info[victim]["host"], info[victim]["ports"]["imap"]
    sem = asyncio.Semaphore(concurrency)
    sessions: dict[str, Imap] = {}

    async def first(i: int, user: str) -> None:
        async with sem:
            for _ in range(50):
                try:
                    sessions[user] = await _session(vhost, vport, user, f"127.0.4.{100 + i % 50}")
                    return
                except (ConnectionError, OSError, asyncio.IncompleteReadError):
                    await asyncio.sleep(0.1)
            raise RuntimeError(f"{user} never logged in")

    t0 = time.monotonic()
    await asyncio.gather(*(first(i, u) for i, u in enumerate(users)))
    print(f"  {len(sessions)} sessions open through {victim} after {time.monotonic() - t0:.1f} s", flush=True)
    done: list[float] = []
    retries = 0

    async def back(i: int, user: str, killed: float) -> None:
        nonlocal retries
        c = sessions[user]
        with contextlib.suppress(Exception):
            await c.r.read()  # the session ends with the kill
        c.close()
        n = i
        while True:
            m = info[survivors[n % len(survivors)]]
            n += 1
            try:
                async with sem:
                    s = await _session(m["host"], m["ports"]["imap"], user, f"127.0.4.{100 + i % 50}")
                done.append(time.monotonic() - killed)
                s.close()
                return
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                retries += 1
                await asyncio.sleep(0.05)

    await asyncio.sleep(1.0)
    cpu0 = sum(_member_cpu(d, n) for n in survivors)
    launcher.kill(d, victim, "KILL")
    killed = time.monotonic()
    await asyncio.gather(*(back(i, u, killed) for i, u in enumerate(users)))
    return {"seconds": max(done), "logins": len(done), "failures": retries,
            "p50": pct(done, 0.5), "p99": pct(done, 0.99), "max": max(done) * 1000,
            "cpu": sum(_member_cpu(d, n) for n in survivors) - cpu0}


def failover_main(accounts: int) -> None:
    from dynamail.cluster import launcher
    from dynamail.directory import Directory, passwords

    users = [f"f{i}@storm.test" for i in range(accounts)]
    argon = passwords.default_hasher().hash(PASSWORD)
    rows: dict[str, dict[str, float]] = {}
    for label, settings in (("keyed verifiers (default)", ""),
                            ("no verifiers (verifier_seconds = 0)", "[auth]\nverifier_seconds = 0\n")):
        with tempfile.TemporaryDirectory(prefix="failstorm") as t:
            d = Path(t) / "c"
            data = launcher.up(d, 3, port_offset=31700, prefix="127.0.21", extra_settings=settings)
            try:
                tool = Directory(Path(t) / "tool", main_domain="tool.test", shared_base=Path(data["shared"]))
                tool.create_domain("storm.test", shared=True)
                for u in users:
                    tool.set_password_hash(tool.create_account("storm.test", u.split("@")[0]), argon)
                print(f"{label}: load average {os.getloadavg()[0]:.2f}", flush=True)
                row = asyncio.run(failover_storm(d, users))
                rows[label] = row
                print(f"  all {row['logins']:.0f} back after {row['seconds']:.1f} s (p50 {row['p50'] / 1000:.2f} s, "
                      f"p99 {row['p99'] / 1000:.2f} s); survivors' CPU {row['cpu']:.1f} s; retries {row['failures']:.0f}; "
                      f"load average {os.getloadavg()[0]:.2f}", flush=True)
            finally:
                launcher.down(d)
    print("\n| failover storm | time until all back | per client p50 / p99 | survivors' CPU |")
    print("|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['seconds']:.1f} s | {r['p50'] / 1000:.2f} / {r['p99'] / 1000:.2f} s | {r['cpu']:.1f} s |")


def _member_cpu(d: Path, name: str) -> float:
    from dynamail.cluster import launcher

    for m in json.loads(launcher.cluster_file(d).read_text())["members"]:
        if m["name"] == name:
            return cpu_seconds(int(m["pid"]))
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--only", choices=("dynamail", "dovecot"))
    ap.add_argument("--failover", action="store_true", help="the failover storm on a local cluster instead")
    ap.add_argument("--server-workers", type=int, default=1,
                    help="dynamail's worker processes (serve --workers; 0 = one per core)")
    args = ap.parse_args()
    if args.failover:
        failover_main(args.accounts)
        return
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
            workers = args.server_workers
            settings = f"workers = {workers}\n"
            # "probe" tells when every worker serves (``serve --workers``); it is not in the storm
            create_accounts(tmp / "dynamail", DOMAIN, PASSWORD, [*users, "probe"], stored_hash=argon,
                            settings=settings)
            tag = "" if workers == 1 else f", {workers or 'per-core'} workers"

            @contextlib.contextmanager
            def running(where: Path):  # type: ignore[no-untyped-def]
                with serve(where, host=HOST, domain=DOMAIN, offset=offset) as (proc, port):
                    if workers != 1:
                        asyncio.run(wait_serving(HOST, port, "probe"))
                    yield proc, port

            with running(tmp) as (proc, port):
                results[f"dynamail cold (argon2id m=19MiB t=2{tag})"] = measure(
                    "dynamail cold", proc.pid, port, users, args.clients)
            with running(tmp) as (proc, port):
                results[f"dynamail restart (verifiers{tag})"] = measure(
                    "dynamail restart", proc.pid, port, users, args.clients)
            prov = tmp / "provisioned"
            (prov / "dynamail" / "Settings").mkdir(parents=True)
            (prov / "dynamail" / "Settings" / "server.toml").write_text(
                f'main_domain = "{DOMAIN}"\n' + settings)
            with serve(prov, host=HOST, domain=DOMAIN, offset=offset):
                took = provision(HOST, offset, ["probe", *users])
                print(f"  {len(users) + 1} accounts created through the CLI in {took:.1f} s", flush=True)
            with running(prov) as (proc, port):
                results[f"dynamail provisioned (verifiers written with the passwords{tag})"] = measure(
                    "dynamail provisioned", proc.pid, port, users, args.clients)
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
