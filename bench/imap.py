"""IMAP load generator: dynamail against Dovecot on the same machine, same mix.

Usage: ``python -m bench.imap [--clients 40] [--duration 20] [--users 20]``

Starts a ``dynamail serve`` process and (when ``/usr/sbin/dovecot`` exists) a
Dovecot 2.3 instance configured in a temporary directory (its own config
file, ``service_count = 0`` and ``process_min_avail`` on imap-login and
imap, plain passwords in a passwd-file, Maildir, loopback on another port),
creates the same users with the same mailbox on both, then runs ``--clients``
concurrent asyncio clients against each in turn for ``--duration`` seconds.

Each client repeats a session with a realistic mix: LOGIN, SELECT,
UID FETCH 1:* FLAGS, two body fetches, a header fetch, APPEND, STORE flags,
SEARCH UNSEEN, STORE \\Deleted on the appended message + EXPUNGE, LOGOUT.
Every command counts as one operation; its latency is recorded.  Both
servers store the same password scheme (``--scheme``: ``{PLAIN}`` or
``{SHA512-CRYPT}``, one hash shared by every user; dynamail keeps it as
imported, ``[auth] rehash_on_login = false``); one session per user warms
both before the run (dynamail's verified-credentials cache, Dovecot's
processes).  ``--scheme argon2`` gives dynamail users argon2id hashes of
the default parameters and Dovecot ``{PLAIN}``.

``--profile`` records the dynamail server with py-spy (when installed) and
prints the functions with the most samples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.server import dynamail_server as start_dynamail
from bench.server import wait_port

DOMAIN = "bench.test"
PASSWORD = "bench-pw"
HOST = "127.0.4.30"


def make_message(i: int, size: int) -> bytes:
    head = (
        f"From: Sender {i} <sender{i}@example.org>\r\nTo: user@{DOMAIN}\r\n"
        f"Subject: Benchmark message {i} about things\r\nDate: Mon, 1 Jan 2024 10:{i % 60:02d}:00 +0000\r\n"
        f"Message-ID: <bench{i}.{random.random()}@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    line = "The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body).encode()


# -- a small IMAP client ------------------------------------------------------


class Imap:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r = reader
        self.w = writer
        self.n = 0

    @classmethod
    async def connect(cls, host: str, port: int, source: str | None = None) -> Imap:
        local = (source, 0) if source else None
        r, w = await asyncio.open_connection(host, port, limit=1 << 22, local_addr=local)
        c = cls(r, w)
        await r.readline()
        return c

    async def cmd(self, text: bytes, literal: bytes | None = None) -> tuple[bytes, list[bytes]]:
        self.n += 1
        tag = b"a%d" % self.n
        if literal is None:
            self.w.write(tag + b" " + text + b"\r\n")
        else:
            self.w.write(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        lines: list[bytes] = []
        while True:
            line = await self.r.readline()
            if not line:
                raise ConnectionError("server closed")
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                line += await self.r.readexactly(int(m.group(1)))
                line += await self.r.readline()
            if line.startswith(tag + b" "):
                return line, lines
            lines.append(line)

    def close(self) -> None:
        self.w.close()


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)

    def all(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]


async def session(host: str, port: int, user: str, stats: Stats, msg: bytes) -> None:
    async def timed(name: str, c: Imap, text: bytes, literal: bytes | None = None) -> tuple[bytes, list[bytes]]:
        t0 = time.perf_counter()
        tagged, lines = await c.cmd(text, literal)
        stats.latencies[name].append(time.perf_counter() - t0)
        if b" OK" not in tagged[:20]:
            stats.errors[name] += 1
        return tagged, lines

    t0 = time.perf_counter()
    c = await Imap.connect(host, port)
    stats.latencies["CONNECT"].append(time.perf_counter() - t0)
    try:
        await timed("LOGIN", c, b"LOGIN " + user.encode() + b" " + PASSWORD.encode())
        _, lines = await timed("SELECT", c, b"SELECT INBOX")
        _, lines = await timed("FETCH FLAGS", c, b"UID FETCH 1:* (FLAGS)")
        uids = [int(m.group(1)) for line in lines if (m := re.search(rb"UID (\d+)", line))]
        if uids:
            for u in random.sample(uids, min(2, len(uids))):
                await timed("FETCH BODY", c, b"UID FETCH %d (BODY.PEEK[])" % u)
            lo = random.choice(uids)
            await timed("FETCH HEADERS", c, b"UID FETCH %d:%d (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])" % (lo, lo + 20))
        tagged, _ = await timed("APPEND", c, b"APPEND INBOX (\\Seen)", msg)
        m = re.search(rb"APPENDUID \d+ (\d+)", tagged)
        if uids:
            await timed("STORE", c, b"UID STORE %d +FLAGS.SILENT (\\Flagged)" % random.choice(uids))
        await timed("SEARCH", c, b"UID SEARCH UNSEEN")
        if m:
            await timed("STORE", c, b"UID STORE " + m.group(1) + b" +FLAGS.SILENT (\\Deleted)")
            await timed("EXPUNGE", c, b"EXPUNGE")
        await timed("LOGOUT", c, b"LOGOUT")
    finally:
        c.close()


async def load(host: str, port: int, users: list[str], clients: int, duration: float) -> tuple[Stats, float]:
    stats = Stats()
    stop = time.monotonic() + duration
    msgs = [make_message(i, random.choice((2000, 4000, 8000, 30000))) for i in range(50)]

    async def worker(i: int) -> None:
        user = users[i % len(users)]
        while time.monotonic() < stop:
            try:
                await session(host, port, user, stats, random.choice(msgs))
            except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                stats.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return stats, time.monotonic() - t0


async def preload(host: str, port: int, users: list[str], messages: int) -> None:
    async def one(user: str) -> None:
        for _ in range(50):  # a temporary failure (workers still placing accounts) is tried again
            c = await Imap.connect(host, port)
            tagged, _ = await c.cmd(b"LOGIN " + user.encode() + b" " + PASSWORD.encode())
            if b"[UNAVAILABLE]" not in tagged:
                break
            c.close()
            await asyncio.sleep(0.2)
        assert b"OK" in tagged, tagged
        for i in range(messages):
            flags = b"(\\Seen)" if i % 3 else b"()"
            tagged, _ = await c.cmd(b"APPEND INBOX " + flags, make_message(i, random.choice((2000, 4000, 8000, 30000))))
            assert b"OK" in tagged, tagged
        await c.cmd(b"LOGOUT")
        c.close()

    await asyncio.gather(*(one(u) for u in users))


async def wait_serving(host: str, port: int, user: str, timeout: float = 60.0) -> None:
    """Until ``user`` can log in: the workers of ``serve --workers`` answer
    logins with ``NO [UNAVAILABLE]`` until they have elected their Controller."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = await Imap.connect(host, port)
            tagged, _ = await c.cmd(b"LOGIN " + user.encode() + b" " + PASSWORD.encode())
            await c.cmd(b"LOGOUT")
            c.close()
            if b"OK" in tagged:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no login for {user} within {timeout:.0f} s")
        await asyncio.sleep(0.2)


# -- servers ------------------------------------------------------------------


def stored_hash(scheme: str) -> str | None:
    """The stored form of PASSWORD under ``scheme`` (None: dynamail's own argon2id)."""
    if scheme == "plain":
        return "{PLAIN}" + PASSWORD
    if scheme == "sha512-crypt":
        from dynamail.directory import shacrypt

        return "{SHA512-CRYPT}" + shacrypt.sha_crypt(PASSWORD.encode(), "$6$benchSaltValue1")
    return None


@contextlib.contextmanager
def dynamail_server(tmp: Path, users: list[str], offset: int, scheme: str = "argon2",  # type: ignore[no-untyped-def]
                    workers: int = 1):
    stored = stored_hash(scheme)
    settings = f"workers = {workers}\n" + ("[auth]\nrehash_on_login = false\n" if stored else "")
    with start_dynamail(tmp, host=HOST, domain=DOMAIN, password=PASSWORD, users=users,
                         offset=offset, stored_hash=stored, settings=settings) as running:
        yield running


DOVECOT_CONF = """\
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
info_log_path = {tmp}/dovecot.log
protocols = imap
listen = {host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{tmp}/mail/%u
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
default_internal_user = dovecot
default_login_user = dovenull
mail_fsync = optimized
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {tmp}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={tmp}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
}}
service imap {{
  service_count = 0
  process_min_avail = 4
  client_limit = 1
  process_limit = 1000
}}
service auth {{
  client_limit = 2000
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
"""


@contextlib.contextmanager
def dovecot_server(tmp: Path, users: list[str], port: int, scheme: str = "plain"):  # type: ignore[no-untyped-def]
    root = tmp / "dovecot"
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stored = stored_hash(scheme) or "{PLAIN}" + PASSWORD
    (root / "passwd").write_text("".join(f"{u}:{stored}::::::\n" for u in users))
    conf = root / "dovecot.conf"
    import pwd

    mail_user = pwd.getpwnam("mail")  # Debian's system user for mail storage
    uid, gid = mail_user.pw_uid, mail_user.pw_gid
    os.chown(root / "mail", uid, gid)
    os.chmod(tmp, 0o755)
    os.chmod(root, 0o755)
    conf.write_text(DOVECOT_CONF.format(tmp=root, host=HOST, port=port, uid=uid, gid=gid))
    proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_port(HOST, port, proc)
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- reporting ------------------------------------------------------------------


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def report(name: str, stats: Stats, elapsed: float) -> dict[str, float]:
    ops = len(stats.all()) - len(stats.latencies.get("CONNECT", []))
    row = {"ops": ops / elapsed, "p50": pct(stats.all(), 0.5), "p99": pct(stats.all(), 0.99)}
    print(f"\n{name}: {ops} commands in {elapsed:.1f}s = {row['ops']:.0f} ops/s, "
          f"p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms, errors {dict(stats.errors)}")
    for cmd, xs in sorted(stats.latencies.items()):
        print(f"  {cmd:14s} n={len(xs):6d} p50={pct(xs, .5):7.2f} ms p99={pct(xs, .99):7.2f} ms "
              f"mean={statistics.fmean(xs) * 1000:7.2f} ms")
    return row


def profile_summary(path: Path, top: int = 15) -> None:
    import shutil as _sh

    _sh.copy(path, "/tmp/imap-profile.txt")
    """Self and inclusive sample counts per function from py-spy's raw output."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        self_c[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    print(f"\nprofile: {total} samples; top self time:")
    for f, n in self_c.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("top inclusive (dynamail frames):")
    shown = 0
    for f, n in incl.most_common():
        if "dynamail" in f and shown < top:
            print(f"  {100 * n / total:5.1f}%  {f}")
            shown += 1


async def idle_wake(host: str, port: int, user: str, rounds: int = 20) -> list[float]:
    """Seconds from another session's APPEND reply to the idler's EXISTS."""
    idler = await Imap.connect(host, port)
    other = await Imap.connect(host, port)
    out = []
    try:
        for c in (idler, other):
            await c.cmd(b"LOGIN " + user.encode() + b" " + PASSWORD.encode())
            await c.cmd(b"SELECT INBOX")
        msg = make_message(1, 2000)
        for _ in range(rounds):
            idler.w.write(b"i IDLE\r\n")
            await idler.r.readline()  # "+ idling"
            await asyncio.sleep(0.05)
            await other.cmd(b"APPEND INBOX", msg)
            t0 = time.perf_counter()
            while b"EXISTS" not in await asyncio.wait_for(idler.r.readline(), 10):
                pass
            out.append(time.perf_counter() - t0)
            idler.w.write(b"DONE\r\n")
            while not (await idler.r.readline()).startswith(b"i "):
                pass
    finally:
        idler.close()
        other.close()
    return out


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and all its descendants (Dovecot forks)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    except psutil.Error:
        pass
    return total


async def run_one(name: str, pid: int, port: int, users: list[str], args: argparse.Namespace) -> dict[str, float]:
    await preload(HOST, port, users, args.messages)
    # warm-up: one session per user (fills the credentials cache, opens accounts)
    await load(HOST, port, users, len(users), 1.0)
    cpu0 = cpu_seconds(pid)
    stats, elapsed = await load(HOST, port, users, args.clients, args.duration)
    cpu = cpu_seconds(pid) - cpu0
    row = report(name, stats, elapsed)
    ops = row["ops"] * elapsed
    row["cpu_us"] = cpu / ops * 1e6 if ops else 0.0
    print(f"  server CPU: {cpu:.1f} s = {row['cpu_us']:.0f} µs per command")
    wake = await idle_wake(HOST, port, users[0])
    row["idle_p50"], row["idle_max"] = pct(wake, 0.5), max(wake) * 1000
    print(f"  IDLE wake-up after another session's APPEND: p50 {row['idle_p50']:.1f} ms, "
          f"max {row['idle_max']:.1f} ms")
    return row


async def idle_memory(pid: int, port: int, users: list[str], n: int) -> None:
    """Server RSS growth per connection held in IDLE (SPEC section 3), of
    the whole process tree and of each process in it (``serve --workers``:
    the supervisor and every worker; a connection accepted by a worker that
    does not own its account costs memory in both)."""
    import psutil

    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]
    conns: list[Imap] = []

    def rss() -> list[int]:
        out = []
        for p in tree:
            try:
                out.append(p.memory_info().rss)
            except psutil.Error:
                out.append(0)
        return out

    def cpu() -> float:
        total = 0.0
        for p in tree:
            with contextlib.suppress(psutil.Error):
                total += sum(p.cpu_times()[:2])
        return total

    async def one(i: int) -> None:
        # spread over client addresses: the server limits connections per address
        c = await Imap.connect(HOST, port, source=f"127.0.4.{100 + i // 900}")
        await c.cmd(b"LOGIN " + users[i % len(users)].encode() + b" " + PASSWORD.encode())
        await c.cmd(b"SELECT INBOX")
        c.w.write(b"i IDLE\r\n")
        await c.r.readline()
        conns.append(c)

    # warm: every account open, caches filled
    for i in range(min(n, len(users))):
        await one(i)
    await asyncio.sleep(1)
    base_rss = rss()
    base_n = len(conns)
    for start in range(base_n, n, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 200))))
    await asyncio.sleep(2)
    now = rss()
    added = max(1, len(conns) - base_n)
    cpu0 = cpu()
    await asyncio.sleep(10)
    busy = cpu() - cpu0
    print(f"\n{len(conns)} connections in IDLE: server RSS {sum(now) / 2**20:.1f} MiB, "
          f"{(sum(now) - sum(base_rss)) / added / 1024:.1f} KiB per added connection; "
          f"server CPU while idle {busy / 10 * 100:.1f} %")
    if len(tree) > 1:
        for i, p in enumerate(tree):
            role = "supervisor" if i == 0 else f"worker pid {p.pid}"
            print(f"  {role}: RSS {now[i] / 2**20:.1f} MiB, {(now[i] - base_rss[i]) / added / 1024:.1f} KiB "
                  f"per added connection")
    for c in conns:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=40)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--only", choices=("dynamail", "dovecot"))
    ap.add_argument("--scheme", choices=("plain", "sha512-crypt", "argon2"), default="plain",
                    help="password scheme stored on both servers (argon2: dynamail only, Dovecot PLAIN)")
    ap.add_argument("--server-workers", type=int, default=1,
                    help="dynamail's worker processes (serve --workers; 0 = one per core)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--idle-conns", type=int, default=0, help="measure memory of N IDLE sessions instead")
    args = ap.parse_args()
    users = [f"user{i}" for i in range(args.users)]
    offset = random.randint(20000, 40000)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="imapbench") as t:
        tmp = Path(t)
        if args.idle_conns:
            with dynamail_server(tmp, users, offset, workers=args.server_workers) as (proc, port):
                if args.server_workers != 1:
                    asyncio.run(wait_serving(HOST, port, users[0]))
                asyncio.run(idle_memory(proc.pid, port, users, args.idle_conns))
            return
        if args.only != "dovecot":
            with dynamail_server(tmp, users, offset, args.scheme, args.server_workers) as (proc, port):
                if args.server_workers != 1:
                    asyncio.run(wait_serving(HOST, port, users[0]))
                spy = None
                if args.profile and shutil.which("py-spy"):
                    spy = subprocess.Popen(
                        ["py-spy", "record", "--pid", str(proc.pid), "--format", "raw",
                         "--output", str(tmp / "profile.txt"), "--rate", "200", "--gil", "--nonblocking",
                         "--duration", str(int(args.duration + args.messages / 50 + 10))],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
                name = "dynamail" if args.server_workers == 1 else f"dynamail ({args.server_workers or 'per-core'} workers)"
                results["dynamail"] = asyncio.run(run_one(name, proc.pid, port, users, args))
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
                    if (tmp / "profile.txt").exists():
                        profile_summary(tmp / "profile.txt")
        if args.only != "dynamail" and os.path.exists("/usr/sbin/dovecot") and os.geteuid() == 0:
            with dovecot_server(tmp, users, offset + 1000, args.scheme) as (dproc, port):
                results["dovecot"] = asyncio.run(run_one("dovecot", dproc.pid, port, users, args))
    print("\n| server | ops/s | p50 ms | p99 ms | server CPU µs/command | IDLE wake p50 / max ms |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ops']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['cpu_us']:.0f} | "
              f"{r['idle_p50']:.1f} / {r['idle_max']:.1f} |")
    if "dynamail" in results and "dovecot" in results:
        print(f"\nratio dynamail/dovecot: {results['dynamail']['ops'] / results['dovecot']['ops']:.2f}")


if __name__ == "__main__":
    main()
