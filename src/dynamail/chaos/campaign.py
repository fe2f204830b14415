"""One fault campaign from start to report.

1. Start a local cluster with :mod:`dynamail.cluster.launcher` (every member
   with its own ``DYNAMAIL_FAULTS_DIR``), create the shared domain
   ``chaos.test`` and its accounts, each with the mailboxes Work and Archive.
2. Run the client workers and the fault injector for ``duration`` seconds.
3. Stop the clients, heal every fault, wait until the cluster serves again
   and the members' queues have handed over what they hold (``SETTLE``).
4. Read the final state through IMAP and the admin CLI of every member and
   the writer epochs from the shared storage, check the whole history and
   write the JSON report.

Everything a run leaves behind is in its directory: ``history.jsonl``,
``report.json``, the members' ``serve.log`` and the shared storage.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import random
import re
import shlex
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynamail.chaos import clock, netns, smallfs, workers
from dynamail.chaos.checker import Checker, Final, Violation, unavailability
from dynamail.chaos.history import History, Op, load
from dynamail.chaos.netns import Topology
from dynamail.chaos.schedule import FAULTS_ENV, Injector, faults_dir
from dynamail.chaos.workers import DOMAIN, MAILBOXES, Env, cli_session, imap_connect, parse_fetch
from dynamail.cluster import launcher

PASSWORD = "chaos-Password-1"
PREFIX = "127.0.21"
OFFSET = 40000
SETTLE = 60.0  # seconds the final check waits for queued deliveries to land
READY_TIMEOUT = 90.0
CLIENT_PORTS = ("smtp", "imap", "pop3", "cli", "http")
# SMTP copies whose owner is unreachable wait in the sender member's queue:
# retry them quickly so that the final check need not wait long
EXTRA_SETTINGS = "[smtp]\nqueue_retry_seconds = 0.5\n"


@dataclass(slots=True)
class Options:
    seed: int
    duration: float
    directory: Path
    backends: int = 3
    frontends: int = 0
    shared_dir: Path | None = None
    accounts: int = 6
    smtp_workers: int = 2
    lease: float = 1.5
    margin: float = 0.3
    heartbeat: float = 0.25
    prefix: str = PREFIX
    port_offset: int = OFFSET
    kinds: tuple[str, ...] = ()
    keep: bool = False
    netns: bool = False
    small_fs: int = 0  # bytes: the shared storage on an ext4 image this small (0: not)
    command: list[str] = field(default_factory=list)


def free_first_host(prefix: str, count: int, port: int, rng: random.Random) -> int:
    """A run of ``count`` addresses in ``prefix`` whose cluster port is free."""
    for _ in range(200):
        first = rng.randrange(1, 250 - count)
        ok = True
        for i in range(count):
            with socket.socket() as s:
                try:
                    s.bind((f"{prefix}.{first + i}", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise launcher.LauncherError(f"no {count} free addresses in {prefix}.x")


def clock_unavailable(o: Options) -> tuple[str, str]:
    """(libfaketime's path, why clock-step cannot be injected): the path is
    empty when the members run without it (the kind was not chosen, or the
    library is not installed)."""
    if o.kinds and "clock-step" not in o.kinds:
        return "", "not chosen"
    lib = clock.library()
    return (lib, "") if lib else ("", "libfaketime is not installed (Debian package faketime)")


def start_cluster(o: Options, topology: Topology | None, faketime: str = "") -> dict[str, Any]:
    """Start the cluster; with ``faketime`` (libfaketime's path) every member
    runs under it, its wall-clock offset read from its faults directory."""
    directory = o.directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    if o.shared_dir is not None:
        link = directory / "shared"
        if not link.exists():
            Path(o.shared_dir).mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(o.shared_dir).absolute(), target_is_directory=True)
    names = [f"b{i}" for i in range(1, o.backends + 1)] + [f"f{j}" for j in range(1, o.frontends + 1)]
    wrappers: dict[str, list[str]] = {}
    for name in names:
        d = faults_dir(directory, name)
        d.mkdir(parents=True, exist_ok=True)
        wrappers[name] = [*(topology.wrapper(name) if topology else []), "env", f"{FAULTS_ENV}={d}"]
        if faketime:
            clock.step(d, 0)
            wrappers[name] += [*clock.environment(faketime, d), *clock.entry()]
    hosts = topology.hosts() if topology else None
    first = 1 if topology else free_first_host(o.prefix, len(names),
                                               launcher.CLUSTER_PORT + o.port_offset, random.Random())
    return launcher.up(directory, o.backends, o.frontends, port_offset=o.port_offset,
                       prefix=o.prefix, first_host=first, lease=o.lease, margin=o.margin,
                       heartbeat=o.heartbeat, timeout=READY_TIMEOUT, extra_settings=EXTRA_SETTINGS,
                       wrappers=wrappers, hosts=hosts)


def check_listeners(directory: Path, data: dict[str, Any], timeout: float = 30.0) -> None:
    """Every port the clients use accepts on every member (a listener that
    did not open, say because a protocol module failed to load, would turn
    the whole run into refusals); else the members' ERROR lines."""
    deadline = time.monotonic() + timeout
    missing: list[str] = []
    while time.monotonic() < deadline:
        missing = []
        for m in data["members"]:
            for port in CLIENT_PORTS:
                try:
                    socket.create_connection((m["host"], m["ports"][port]), timeout=2).close()
                except OSError:
                    missing.append(f"{m['name']} {port}")
        if not missing:
            return
        time.sleep(0.5)
    errors = []
    for m in data["members"]:
        log = directory / "members" / m["name"] / "serve.log"
        if log.exists():
            errors += [f"{m['name']}: {line}" for line in log.read_text(errors="replace").splitlines()
                       if " ERROR " in line or "Error:" in line][:5]
    raise RuntimeError(f"listeners not open: {', '.join(missing)}\n" + "\n".join(errors))


def retry(what: str, fn: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (OSError, imaplib.IMAP4.error, EOFError, RuntimeError, PermissionError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {exc}") from exc
            time.sleep(0.3)


def provision(data: dict[str, Any], accounts: list[str]) -> None:
    member, admin = data["members"][0], data["admin"]

    def cli(command: str, ok_exists: bool = True) -> None:
        reply = cli_session(member, admin, command)[0]
        if not reply.startswith("2") and not (ok_exists and reply.startswith("514")):
            raise RuntimeError(f"{command}: {reply}")

    retry("create domain", lambda: cli(f"CREATEDOMAIN {DOMAIN} SHARED"))
    for a in accounts:
        retry(f"create {a}", lambda a=a: cli(f'CREATEACCOUNT {a} {{Password="{PASSWORD}";}}'))

    def mailboxes(account: str) -> None:
        conn = imap_connect(member, timeout=15)
        try:
            conn.login(account, PASSWORD)
            for box in MAILBOXES[1:]:
                typ, got = conn.create(box)
                if typ != "OK" and b"ALREADYEXISTS" not in b"".join(x for x in got if isinstance(x, bytes)):
                    raise RuntimeError(f"CREATE {box}: {got}")
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    for a in accounts:
        retry(f"mailboxes of {a}", lambda a=a: mailboxes(a))


# -- the final state --------------------------------------------------------------
def _imap(member: dict[str, Any], account: str) -> imaplib.IMAP4:
    conn = imap_connect(member, timeout=15)
    typ, data = conn.login(account, PASSWORD)
    if typ != "OK":
        raise RuntimeError(f"login {account}: {data}")
    return conn


def read_messages(member: dict[str, Any], account: str) -> tuple[dict[str, list[list[Any]]], dict[str, int]]:
    def once() -> tuple[dict[str, list[list[Any]]], dict[str, int]]:
        conn = _imap(member, account)
        try:
            boxes: dict[str, list[list[Any]]] = {}
            validity: dict[str, int] = {}
            for box in MAILBOXES:
                typ, got = conn.select(box, readonly=True)
                if typ != "OK":
                    raise RuntimeError(f"SELECT {box}: {got}")
                uv = conn.response("UIDVALIDITY")[1]
                validity[box] = int(uv[0]) if uv and uv[0] else 0
                typ, got = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                if typ != "OK":
                    raise RuntimeError(f"FETCH {box}: {got}")
                boxes[box] = parse_fetch(got)
            return boxes, validity
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    result: tuple[dict[str, list[list[Any]]], dict[str, int]] = retry(f"read {account}", once)
    return result


_LIST = re.compile(rb'\(([^)]*)\) (?:"[^"]*"|NIL) "?([^"]*)"?$')
_STATUS = re.compile(rb"MESSAGES (\d+) UIDNEXT (\d+) UIDVALIDITY (\d+)")


def read_image(member: dict[str, Any], account: str) -> tuple[list[str], dict[str, list[int]]]:
    """The mailboxes ``member`` lists for ``account`` and their STATUS."""
    def once() -> tuple[list[str], dict[str, list[int]]]:
        conn = _imap(member, account)
        try:
            typ, got = conn.list()
            if typ != "OK":
                raise RuntimeError(f"LIST: {got}")
            names = sorted(m.group(2).decode() for line in got if isinstance(line, bytes)
                           and (m := _LIST.search(line)))
            status: dict[str, list[int]] = {}
            for box in names:
                typ, got = conn.status(box, "(MESSAGES UIDNEXT UIDVALIDITY)")
                m = _STATUS.search(got[0] if got and isinstance(got[0], bytes) else b"")
                if typ != "OK" or not m:
                    raise RuntimeError(f"STATUS {box}: {got}")
                status[box] = [int(x) for x in m.groups()]
            return names, status
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    result: tuple[list[str], dict[str, list[int]]] = retry(f"image of {account}", once)
    return result


_NAMES = re.compile(r"([A-Za-z0-9._-]+)=")
_REALNAME = re.compile(r'RealName="?([^";]*)"?;')


def read_admin(member: dict[str, Any], admin: dict[str, str], accounts: list[str]) -> tuple[list[str], dict[str, str]]:
    def once() -> tuple[list[str], dict[str, str]]:
        replies = cli_session(member, admin, f"LISTACCOUNTS {DOMAIN}",
                              *(f"GETACCOUNTSETTINGS {a}" for a in accounts))
        if not all((r and not r[:1].isdigit()) or r.startswith("2") for r in replies):
            raise RuntimeError(f"admin CLI: {replies}")
        names = sorted(_NAMES.findall(replies[0]))
        real = {}
        for a, r in zip(accounts, replies[1:], strict=True):
            m = _REALNAME.search(r)
            real[a] = m.group(1) if m else ""
        return names, real

    result: tuple[list[str], dict[str, str]] = retry(f"admin state on {member['name']}", once)
    return result


def read_writer_epochs(shared: Path, accounts: list[str]) -> dict[str, dict[str, list[int]]] | None:
    """Each account's writer epochs per mailbox; None when the storage engine
    no longer offers ``writer_epochs`` (the check is then skipped)."""
    try:
        from dynamail.storage import writer_epochs
    except ImportError:
        return None
    out: dict[str, dict[str, list[int]]] = {}
    for a in accounts:
        name = a.partition("@")[0]
        for path in Path(shared).glob(f"{DOMAIN}/Accounts/*/{name}/Mail"):
            try:
                out[a] = writer_epochs(path)
            except Exception:  # an API change must not break the campaign
                return None
    return out


def read_final(data: dict[str, Any], directory: Path, accounts: list[str], reader: dict[str, Any]) -> Final:
    final = Final()
    for a in accounts:
        final.messages[a], final.uidvalidity[a] = read_messages(reader, a)
    final.time = time.time()
    for m in data["members"]:
        final.mailboxes[m["name"]] = {}
        final.status[m["name"]] = {}
        for a in accounts:
            final.mailboxes[m["name"]][a], final.status[m["name"]][a] = read_image(m, a)
        final.accounts[m["name"]], final.realnames[m["name"]] = read_admin(m, data["admin"], accounts)
    final.writer_epochs = read_writer_epochs(Path(data["shared"]), accounts)
    for m in data["members"]:
        log = directory / "members" / m["name"] / "serve.log"
        final.logs[m["name"]] = log.read_text(errors="replace").splitlines() if log.exists() else []
    return final


def missing_acknowledged(ops: list[Op], final: Final) -> list[str]:
    """Acknowledged deliveries not (yet) present: what settling waits for."""
    present = {(a, b, s[1]) for a, boxes in final.messages.items() for b, seen in boxes.items()
               for s in seen}
    moved = {(o.account, o.mailbox, o.msgid) for o in ops if o.kind in ("move", "expunge")
             and o.outcome != "refused"}
    return [o.msgid for o in ops if o.kind == "deliver" and o.outcome == "ok"
            and (o.account, "INBOX", o.msgid) not in present and (o.account, "INBOX", o.msgid) not in moved]


def settled(final: Final) -> bool:
    """Whether every member showed the same STATUS: a copy still moving from
    a member's queue while the members were read makes them differ."""
    seen = list(final.status.values())
    return all(s == seen[0] for s in seen)


def search_everywhere(data: dict[str, Any], account: str, msgid: str) -> list[str]:
    """Evidence for a missing message: UID SEARCH HEADER Message-ID on every
    member, every mailbox."""
    out = []
    for m in data["members"]:
        try:
            conn = _imap(m, account)
        except Exception as exc:
            out.append(f"{m['name']}: {exc!r}")
            continue
        try:
            for box in MAILBOXES:
                conn.select(box, readonly=True)
                typ, got = conn.uid("SEARCH", "HEADER", "Message-ID", f'"{msgid}"')
                out.append(f"{m['name']} {box}: {typ} {got}")
        except Exception as exc:
            out.append(f"{m['name']}: {exc!r}")
        finally:
            with contextlib.suppress(Exception):
                conn.logout()
    return out


# -- the run --------------------------------------------------------------------
def reproduce(o: Options) -> str:
    return " ".join(shlex.quote(x) for x in o.command) if o.command else (
        f"dynamail chaos --seed {o.seed} --duration {o.duration:g} --backends {o.backends} "
        f"--frontends {o.frontends}")


def run(o: Options, say: Any = print) -> dict[str, Any]:
    """Run the campaign; return the report (also written to DIR/report.json)."""
    directory = o.directory.absolute()
    accounts = [f"u{i}@{DOMAIN}" for i in range(1, o.accounts + 1)]
    say(f"chaos: seed {o.seed}, {o.duration:g} s, {o.backends} backends, {o.frontends} frontends, "
        f"in {directory}")
    topology: Topology | None = None
    if o.netns:
        why = netns.unavailable()
        if why:
            raise RuntimeError(f"--netns: {why}")
        names = [f"b{i}" for i in range(1, o.backends + 1)] + [f"f{j}" for j in range(1, o.frontends + 1)]
        topology = Topology(names)
    small: smallfs.SmallFs | None = None
    if o.small_fs:
        why = smallfs.unavailable()
        if why:
            raise RuntimeError(f"--small-fs: {why}")
        if o.shared_dir is not None:
            raise RuntimeError("--small-fs and --shared-dir exclude each other")
        directory.mkdir(parents=True, exist_ok=True)
        try:
            small = smallfs.SmallFs(directory, o.small_fs)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"--small-fs: {' '.join(exc.cmd)}: {exc.stderr!r}") from exc
        o.shared_dir = small.shared
        say(f"chaos: shared storage on a {o.small_fs // 1024**2} MiB ext4 image at {small.mount}")
    faketime, no_clock = clock_unavailable(o)
    if no_clock and no_clock != "not chosen":
        say(f"chaos: clock-step not available: {no_clock}")
    try:
        data = start_cluster(o, topology, faketime)
    except BaseException:
        if topology is not None:
            topology.remove()
        if small is not None:
            small.unmount()
        raise
    try:
        check_listeners(directory, data)
    except BaseException:
        with contextlib.suppress(Exception):
            launcher.down(directory)
        if topology is not None:
            topology.remove()
        if small is not None:
            small.unmount()
        raise
    history = History(directory / "history.jsonl")
    report: dict[str, Any] = {"seed": o.seed, "duration": o.duration, "backends": o.backends,
                              "frontends": o.frontends, "reproduce": reproduce(o),
                              "directory": str(directory), "shared": data["shared"]}
    try:
        provision(data, accounts)
        env = Env(members=data["members"], accounts=accounts, password=PASSWORD, admin=data["admin"],
                  history=history, seed=o.seed)
        rng = random.Random(o.seed)
        pool: list[workers.Worker] = [workers.ImapWorker(env, f"imap-{a.partition('@')[0]}",
                                                         rng.randrange(2**32), a) for a in accounts]
        pool += [workers.SmtpWorker(env, f"smtp-{i}", rng.randrange(2**32))
                 for i in range(o.smtp_workers)]
        pool += [workers.Pop3Worker(env, "pop3", rng.randrange(2**32)),
                 workers.AdminWorker(env, "admin", rng.randrange(2**32))]
        injector = Injector(directory, history, o.seed, o.lease, o.duration, accounts, env.stop,
                            kinds=o.kinds, say=say, topology=topology, clock_unavailable=no_clock,
                            small_fs=small)
        started = time.time()
        for w in pool:
            w.start()
        injector.start()
        while time.time() - started < o.duration and not env.stop.is_set():
            time.sleep(0.5)
            dead = [w.name for w in pool if not w.is_alive()]
            if dead:
                raise RuntimeError(f"worker(s) {dead} failed: {[repr(w.error) for w in pool if w.error]}")
        say(f"chaos: {len(history.faults)} faults injected; stopping clients and healing")
        env.stop.set()
        stuck = workers.wait_all(pool, 3 * workers.IO_TIMEOUT)
        injector.join(60)
        if injector.error is not None:
            raise RuntimeError(f"fault injector failed: {injector.error!r}")
        launcher.wait_serving(directory, timeout=READY_TIMEOUT)
        data = launcher.read_cluster(directory)
        ops, faults = history.snapshot()
        reader = random.Random(o.seed).choice(data["members"])
        deadline = time.monotonic() + SETTLE
        while True:
            final = read_final(data, directory, accounts, reader)
            missing = missing_acknowledged(ops, final)
            if (not missing and settled(final)) or time.monotonic() > deadline:
                break
            time.sleep(2.0)
        (directory / "final.json").write_text(json.dumps(asdict(final)) + "\n")
        violations = Checker(ops, faults, final).check()
        for v in violations:
            if v.kind == "lost" and v.text.split()[1:2]:
                account_box, msgid = v.text.split()[0], v.text.split()[1]
                v.evidence += search_everywhere(data, account_box.partition("/")[0], msgid)
        if stuck:
            violations.append(Violation("stuck-client", f"clients still waiting after the end: {stuck}"))
        report.update(summary(ops, faults, violations, final, injector.log))
    finally:
        history.close()
        if not o.keep:
            with contextlib.suppress(Exception):
                launcher.down(directory)
            if topology is not None:
                topology.remove()
            if small is not None:
                small.unmount()
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def summary(ops: list[Op], faults: list[Any], violations: list[Violation], final: Final,
            injector_log: list[str]) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for op in ops:
        counts.setdefault(op.kind, {"ok": 0, "refused": 0, "unknown": 0})[op.outcome] += 1
    kinds: dict[str, int] = {}
    unavailable: dict[str, int] = {}
    for f in faults:
        if f.triggered:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        elif not f.available:
            unavailable[f.kind] = unavailable.get(f.kind, 0) + 1
    return {
        "ok": not violations,
        "operations": counts,
        "faults": {"injected": sum(kinds.values()), "by_kind": kinds,
                   "not_triggered": sum(1 for f in faults if not f.triggered),
                   "not_available": unavailable,
                   "list": [asdict(f) for f in faults]},
        "unavailability": unavailability(ops, faults),
        "violations": [asdict(v) for v in violations],
        "violations_by_kind": {k: sum(1 for v in violations if v.kind == k)
                               for k in sorted({v.kind for v in violations})},
        "writer_epochs_checked": final.writer_epochs is not None,
        "injector_log": injector_log,
    }


def recheck(directory: Path) -> dict[str, Any]:
    """Check the history and final state a campaign left in ``directory``
    again (after a change to the checker); the report is returned, not written."""
    directory = Path(directory)
    ops, faults = load(directory / "history.jsonl")
    final = Final(**json.loads((directory / "final.json").read_text()))
    violations = Checker(ops, faults, final).check()
    previous = json.loads((directory / "report.json").read_text())
    return {**previous, **summary(ops, faults, violations, final, previous.get("injector_log", []))}
