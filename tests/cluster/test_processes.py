"""Real clusters, real processes, real signals (issue: the Dynamic Cluster).

No timed assertions: failover times are measured by ``bench/cluster.py``;
these tests wait for outcomes and check invariants (one Controller, every
acknowledged message present, storage epochs never go backwards).
"""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
import threading
import time
from typing import Any

import pytest
from tests.cluster.clients import count_when_available
from tests.cluster.conftest import LEASE, Cluster, cut, have, set_member_env

from dynamail.cluster import launcher

pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.slow, pytest.mark.timeout(240)]

needs_imap = pytest.mark.skipif(not have("dynamail.imap.adapter"), reason="IMAP server not built")
needs_smtp = pytest.mark.skipif(not have("dynamail.smtp.adapter"), reason="SMTP server not built")
PASSWORD = "pw-Cluster-1"


def provision(c: Cluster, member: str, accounts: tuple[str, ...] = ("ann",)) -> None:
    out = c.cli(member, "CREATEDOMAIN shared.test SHARED")
    assert out[0].startswith("200"), out
    for a in accounts:
        out = c.cli(member, f'CREATEACCOUNT {a}@shared.test {{Password="{PASSWORD}";}}')
        assert out[0].startswith("200"), out


def login_select(c: Cluster, member: str, account: str = "ann@shared.test") -> int:
    """Log in (retrying while the account moves) and return the message count."""
    return count_when_available(lambda: c.imap(member, account, PASSWORD), account, member)


def login_when_available(c: Cluster, member: str, account: str = "ann@shared.test",
                         seconds: float = 15.0) -> imaplib.IMAP4:
    """Log in through ``member``, retrying only while the answer is the
    temporary ``NO [UNAVAILABLE]`` (a member that has just re-joined, an
    account on the move); any other refusal fails at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return c.imap(member, account, PASSWORD)
        except imaplib.IMAP4.error as exc:
            if "[UNAVAILABLE]" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def subjects(c: Cluster, member: str, account: str = "ann@shared.test") -> set[str]:
    conn = login_when_available(c, member, account)
    try:
        conn.select("INBOX", readonly=True)
        _typ, data = conn.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        out = set()
        for item in data:
            if isinstance(item, tuple):
                line = item[1].decode().strip()
                out.add(line.split(":", 1)[1].strip())
        return out
    finally:
        conn.logout()


def test_cold_start_three_backends_one_controller_one_backup(cluster_factory: Any) -> None:
    c = cluster_factory(3)
    st = c.wait_controller()
    assert st["controller"] in c.names() and st["backup"] in c.names()
    assert st["controller"] != st["backup"]
    # every member names the same Controller, and only epoch 1 was ever claimed
    from dynamail.cluster.election import ElectionStore

    store = ElectionStore(c.dir / "shared")
    assert store.highest_epoch() == 1
    became = [n for n in c.names() if "became controller" in c.logs(n)]
    assert became == [st["controller"]]
    assert all(m["alive"] and m["ready"] for m in st["members"])
    assert all(m["version"] for m in st["members"])
    # the admin CLI protocol answers the same on every member
    for name in c.names():
        assert st["controller"] in c.cli(name, "GETCURRENTCONTROLLER")[0]
    listed = c.cli("b1", "LISTCLUSTERMEMBERS")[0]
    assert all(n in listed for n in c.names()), listed
    assert c.cli("b1", "SETMEMBERNONREADY b2")[0].startswith("200")
    c.wait(lambda: not next(m for m in c.status()["members"] if m["name"] == "b2")["ready"],
           what="b2 non-ready")
    assert c.cli("b3", "SETMEMBERREADY b2")[0].startswith("200")
    c.wait(lambda: next(m for m in c.status()["members"] if m["name"] == "b2")["ready"],
           what="b2 ready")
    assert c.cli("b1", "SETMEMBERNONREADY nosuch")[0].startswith("5")


@needs_imap
@needs_smtp
def test_shared_objects_everywhere_smtp_in_one_member_imap_from_another(cluster_factory: Any) -> None:
    c = cluster_factory(3)
    provision(c, "b3")
    for m in c.names():
        listed = c.cli(m, "LISTACCOUNTS shared.test")
        assert "ann" in listed[0], (m, listed)
    host = c.member("b1")
    with smtplib.SMTP(host["host"], host["ports"]["smtp"], timeout=15) as s:
        assert s.sendmail("x@example.org", ["ann@shared.test"],
                          b"Subject: across\r\n\r\nhello\r\n") == {}
    owner = c.locate("ann@shared.test")
    assert owner in c.names()
    for m in c.names():
        assert "across" in subjects(c, m)
    # a cluster-wide setting made on one member is in effect on another
    out = c.cli("b2", 'UPDATEACCOUNTSETTINGS ann@shared.test {RealName="Ann Shared";}')
    assert out[0].startswith("200"), out
    eff = c.cli("b3", "GETACCOUNTEFFECTIVESETTINGS ann@shared.test")
    assert "Ann Shared" in eff[0]
    # cluster-wide Default Account Settings set on one member apply on every member
    out = c.cli("b3", 'UPDATECLUSTERACCOUNTDEFAULTS {MaxAccountSize="77M";}')
    assert out[0].startswith("200"), out
    for m in c.names():
        eff = c.cli(m, "GETACCOUNTEFFECTIVESETTINGS ann@shared.test")
        assert "77M" in eff[0], (m, eff)
    # a Cluster-Wide Alert posted on one member is shown at the next login on another,
    # through a relay to the owner
    out = c.cli("b1", 'POSTCLUSTERALERT "maintenance tonight"')
    assert out[0].startswith("200"), out
    import socket

    relayer = c.member(next(n for n in c.names() if n != c.locate("ann@shared.test")))

    def login_lines() -> list[bytes]:
        with socket.create_connection((relayer["host"], relayer["ports"]["imap"]), timeout=15) as sock:
            f = sock.makefile("rwb")
            f.readline()
            f.write(f"a1 LOGIN ann@shared.test {PASSWORD}\r\na2 LOGOUT\r\n".encode())
            f.flush()
            lines: list[bytes] = []
            while not (lines and lines[-1].startswith(b"a2 ")):
                line = f.readline()
                assert line, lines
                lines.append(line)
        return lines

    lines = login_lines()
    assert any(b"[ALERT] maintenance tonight" in line for line in lines), lines
    # shown once: the owner marks it seen through the Controller, the one
    # writer of shared documents (a direct write is refused off the Controller)
    lines = login_lines()
    assert not any(b"[ALERT]" in line for line in lines), lines
    # a mailbox operation on a member that does not own the account runs at the owner
    other = next(n for n in c.names() if n != owner)
    out = c.cli(other, "CREATEMAILBOX ann@shared.test Projects")
    assert out[0].startswith("200"), out
    conn = c.imap(owner, "ann@shared.test", PASSWORD)
    try:
        typ, boxes = conn.list()
        assert typ == "OK" and any(b"Projects" in b for b in boxes)
    finally:
        conn.logout()


class Load:
    """APPENDs through one member and SMTP deliveries through another, in
    threads, recording what the server acknowledged."""

    def __init__(self, c: Cluster, imap_member: str, smtp_member: str) -> None:
        self.c = c
        self.imap_member = imap_member
        self.smtp_member = smtp_member
        self.acked: set[str] = set()
        self.appended = 0  # APPENDs acknowledged (IMAP through a relay)
        self.stop = threading.Event()
        self.errors = 0
        self.threads = [threading.Thread(target=self._appends, daemon=True),
                        threading.Thread(target=self._deliveries, daemon=True)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _appends(self) -> None:
        n = 0
        conn: imaplib.IMAP4 | None = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.c.imap(self.imap_member, "ann@shared.test", PASSWORD)
                n += 1
                subject = f"append-{n}"
                typ, _ = conn.append("INBOX", None, None, f"Subject: {subject}\r\n\r\nx\r\n".encode())
                if typ == "OK":
                    self.acked.add(subject)
                    self.appended += 1
            except (imaplib.IMAP4.error, OSError, EOFError):
                self.errors += 1
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.shutdown()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.logout()

    def _deliveries(self) -> None:
        m = self.c.member(self.smtp_member)
        n = 0
        while not self.stop.is_set():
            n += 1
            subject = f"smtp-{n}"
            try:
                with smtplib.SMTP(m["host"], m["ports"]["smtp"], timeout=15) as s:
                    refused = s.sendmail("x@example.org", ["ann@shared.test"],
                                         f"Subject: {subject}\r\n\r\ny\r\n".encode())
                    if not refused:
                        self.acked.add(subject)
            except (smtplib.SMTPException, OSError):
                self.errors += 1
                time.sleep(0.05)


def _wait_appended(load: Load, count: int) -> None:
    deadline = time.monotonic() + 30
    while load.appended < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert load.appended >= count


@needs_imap
@needs_smtp
def test_kill_9_of_owner_under_appends_and_deliveries_loses_nothing(cluster_factory: Any) -> None:
    c = cluster_factory(3)
    provision(c, "b1")
    login_select(c, "b1")
    owner = c.locate("ann@shared.test")
    others = [n for n in c.names() if n != owner]
    with Load(c, others[0], others[1]) as load:
        _wait_appended(load, 20)
        c.kill(owner, "KILL")
        before = load.appended
        _wait_appended(load, before + 20)  # APPENDs succeed again: the account moved
    new_owner = c.locate("ann@shared.test")
    assert new_owner in others
    # deliveries acknowledged while the owner was dead wait in the receiving
    # member's durable queue and arrive once the account is open again
    with contextlib.suppress(AssertionError):
        c.wait(lambda: not (load.acked - subjects(c, others[0])), timeout=60,
               what="every acknowledged message")
    lost = load.acked - subjects(c, others[0])
    assert not lost, f"acknowledged but lost: {sorted(lost)[:10]}"
    from dynamail.storage import epochs_monotonic

    assert epochs_monotonic(c.mail_path("shared.test", "ann"))


@needs_imap
def test_kill_controller_then_backup_then_both_in_turn(cluster_factory: Any) -> None:
    c = cluster_factory(3)
    provision(c, "b2")
    st = c.wait_controller()
    first = st["controller"]
    c.kill(first, "KILL")
    st = c.wait_controller(exclude=(first,))
    assert st["controller"] != first
    login_select(c, next(n for n in c.names() if n != first))
    launcher.start(c.dir, first)
    c.wait_controller()
    # the Backup dies: another backend is named Backup
    backup = c.status()["backup"]
    assert backup
    c.kill(backup, "KILL")
    c.wait(lambda: c.status()["backup"] not in ("", backup), what="a new backup")
    launcher.start(c.dir, backup)
    st = c.wait_controller()
    # both in turn: the Controller, then its successor
    ctl = st["controller"]
    c.kill(ctl, "KILL")
    st = c.wait_controller(exclude=(ctl,))
    ctl2 = st["controller"]
    c.kill(ctl2, "KILL")
    st = c.wait_controller(exclude=(ctl, ctl2))
    last = next(n for n in c.names() if n not in (ctl, ctl2))
    assert st["controller"] == last and st["backup"] == ""
    login_select(c, last)


@needs_imap
def test_sigstop_controller_past_lease_does_not_act_after_sigcont(cluster_factory: Any) -> None:
    c = cluster_factory(3)
    provision(c, "b1")
    st = c.wait_controller()
    old = st["controller"]
    # make the Controller own the account, then freeze it
    others = [n for n in c.names() if n != old]
    for n in others:
        launcher.set_ready(c.dir, n, False)
    c.wait(lambda: not any(m["ready"] for m in c.status()["members"] if m["name"] in others),
           what="non-ready members")
    login_select(c, others[0])
    assert c.locate("ann@shared.test") == old
    for n in others:
        launcher.set_ready(c.dir, n, True)
    c.kill(old, "STOP")
    st = c.wait_controller(exclude=(old,))
    new = st["controller"]
    # the account is usable elsewhere while the old Controller sleeps
    conn = c.imap(others[0], "ann@shared.test", PASSWORD)
    conn.select("INBOX")
    assert conn.append("INBOX", None, None, b"Subject: while-stopped\r\n\r\nz\r\n")[0] == "OK"
    conn.logout()
    time.sleep(3 * LEASE)
    c.kill(old, "CONT")
    # after waking it steps down and re-joins as an ordinary member
    c.wait(lambda: "stepping down" in c.logs(old), what="the old controller to step down")
    st = c.wait_controller()
    assert st["controller"] == new
    conn = c.imap(others[1], "ann@shared.test", PASSWORD)
    conn.select("INBOX")
    assert conn.append("INBOX", None, None, b"Subject: after-cont\r\n\r\nz\r\n")[0] == "OK"
    conn.logout()
    assert {"while-stopped", "after-cont"} <= subjects(c, old)
    from dynamail.storage import epochs_monotonic, writer_epochs

    path = c.mail_path("shared.test", "ann")
    assert epochs_monotonic(path), writer_epochs(path)


@needs_imap
def test_partition_of_one_backend_no_split_brain_and_rejoin(cluster_factory: Any) -> None:
    """A real cut of every cluster connection of one backend (its sockets are
    closed and no new ones are accepted or made) while it keeps its shared
    storage: the worst case for split brain."""
    c = cluster_factory(3)
    provision(c, "b1")
    st = c.wait_controller()
    victim = next(n for n in c.names() if n not in (st["controller"],))
    for n in c.names():
        if n != victim:
            launcher.set_ready(c.dir, n, False)
    c.wait(lambda: [m["name"] for m in c.status()["members"] if m["ready"]] == [victim],
           what="only the victim ready")
    login_select(c, st["controller"])
    assert c.locate("ann@shared.test") == victim
    for n in c.names():
        launcher.set_ready(c.dir, n, True)
    cut(c, victim, True)
    c.wait(lambda: not next(m for m in c.status()["members"] if m["name"] == victim)["alive"],
           what="the cut member to be declared dead")
    rest = [n for n in c.names() if n != victim]
    login_select(c, rest[0])
    assert c.locate("ann@shared.test") in rest
    assert c.status()["controller"] in rest
    c.wait(lambda: "lease lost" in c.logs(victim), what="the cut member to close its accounts")
    cut(c, victim, False)
    c.wait(lambda: next(m for m in c.status()["members"] if m["name"] == victim)["alive"],
           what="the member to re-join")
    st = c.wait_controller()
    assert st["controller"] in rest
    from dynamail.cluster.election import ElectionStore

    assert ElectionStore(c.dir / "shared").current().member == st["controller"]  # type: ignore[union-attr]
    from dynamail.storage import epochs_monotonic

    assert epochs_monotonic(c.mail_path("shared.test", "ann"))


@needs_imap
def test_rolling_upgrade_to_protocol_version_2(cluster_factory: Any) -> None:
    c = cluster_factory(3)
    provision(c, "b1")
    for name in c.names():
        launcher.set_ready(c.dir, name, False)
        c.wait(lambda n=name: not next(m for m in c.status()["members"] if m["name"] == n)["ready"],
               what=f"{name} non-ready")
        c.kill(name, "TERM")
        c.wait(lambda n=name: not launcher.alive(c.member(n)["pid"]), what=f"{name} to stop")
        c.wait(lambda n=name: not next(m for m in c.status()["members"] if m["name"] == n)["alive"],
               what=f"{name} to be gone from the Controller's view")
        set_member_env(c, name, {"DYNAMAIL_CLUSTER_PROTOCOL_MAX": "2"})
        launcher.start(c.dir, name)
        c.wait_controller()
        c.wait(lambda n=name: next(m for m in c.status()["members"] if m["name"] == n)["alive"],
               what=f"{name} to re-join")
        # service continues throughout, through any member still running
        login_select(c, next(n for n in c.names() if n != name))
        st = c.status()
        if name == "b1" and st["controller"] != name and st["controller"] != "":
            row = next(m for m in st["members"] if m["name"] == name)
            assert row["version"].endswith("/p1"), row  # a version-2 member with a version-1 Controller
    c.wait_controller()
    # members talking to a version-2 Controller negotiated version 2
    c.wait(lambda: all(m["version"].endswith("/p2") for m in c.status()["members"]),
           what="every member on protocol version 2")
    login_select(c, "b2")


def test_wrong_secret_cannot_join(cluster_factory: Any, tmp_path: Any) -> None:
    import asyncio

    from dynamail.cluster import wire
    from dynamail.cluster.peer import client_tls, dial

    c = cluster_factory(1)
    m = c.member("b1")

    async def attempt(tls: Any) -> None:
        async def none(peer: Any, msg: Any) -> None:
            return None

        await dial(m["host"], m["cluster_port"], "intruder", b"not-the-secret-at-all", none,
                   tls=tls)

    # over TLS (which anyone may open) the handshake proof refuses the intruder
    with pytest.raises(wire.AuthenticationFailed):
        asyncio.run(attempt(client_tls()))
    c.wait(lambda: "refused" in c.logs("b1"), what="the refusal to be logged")
    # and the cluster port speaks no plaintext at all
    with pytest.raises((ConnectionError, wire.ProtocolError, TimeoutError)):
        asyncio.run(attempt(None))
    assert [n["name"] for n in c.status()["members"] if n.get("alive")] == ["b1"]


def _place_on(c: Cluster, owner: str, account: str = "ann@shared.test") -> None:
    """Open ``account`` on ``owner`` (the others are Non-Ready meanwhile)."""
    others = [n for n in c.names() if n != owner]
    for n in others:
        launcher.set_ready(c.dir, n, False)
    c.wait(lambda: [m["name"] for m in c.status()["members"] if m["ready"]] == [owner],
           what=f"only {owner} ready")
    login_select(c, others[0], account)
    assert c.locate(account) == owner
    for n in others:
        launcher.set_ready(c.dir, n, True)
    # the Controller places by what it knows: every member Ready there first
    c.wait(lambda: all(m["ready"] for m in c.status()["members"]), what="every member ready")


@needs_imap
@needs_smtp
def test_relayed_idle_wakes_on_delivery_through_a_third_member(cluster_factory: Any) -> None:
    c = cluster_factory(3)
    provision(c, "b1")
    _place_on(c, "b2")
    m = c.member("b1")
    import socket

    with socket.create_connection((m["host"], m["ports"]["imap"]), timeout=20) as s:
        f = s.makefile("rwb")
        f.readline()

        def send(line: bytes) -> None:
            f.write(line + b"\r\n")
            f.flush()

        def until(prefix: bytes) -> list[bytes]:
            got = []
            while True:
                line = f.readline()
                assert line, got
                got.append(line)
                if line.startswith(prefix):
                    return got

        send(f"a1 LOGIN ann@shared.test {PASSWORD}".encode())
        until(b"a1 ")
        send(b"a2 SELECT INBOX")
        until(b"a2 OK")
        send(b"a3 IDLE")
        until(b"+ ")
        smtp = c.member("b3")
        with smtplib.SMTP(smtp["host"], smtp["ports"]["smtp"], timeout=15) as sm:
            assert sm.sendmail("x@example.org", ["ann@shared.test"], b"Subject: idle\r\n\r\nz\r\n") == {}
        lines = until(b"* ")
        while b"EXISTS" not in lines[-1]:
            lines += until(b"* ")
        send(b"DONE")
        until(b"a3 OK")
        send(b"a4 LOGOUT")
    assert c.locate("ann@shared.test") == "b2"


@pytest.mark.skipif(not have("dynamail.pop3.adapter"), reason="POP3 server not built")
@needs_smtp
def test_pop3_session_relayed_to_the_owner(cluster_factory: Any) -> None:
    import poplib

    c = cluster_factory(3)
    provision(c, "b1")
    _place_on(c, "b3")
    m = c.member("b2")
    with smtplib.SMTP(m["host"], m["ports"]["smtp"], timeout=15) as sm:
        assert sm.sendmail("x@example.org", ["ann@shared.test"], b"Subject: pop\r\n\r\nz\r\n") == {}
    from dynamail.net.tls import client_context_insecure

    p = poplib.POP3(m["host"], m["ports"]["pop3"], timeout=15)
    try:
        p.stls(client_context_insecure())
        p.user("ann@shared.test")
        p.pass_(PASSWORD)
        count, _size = p.stat()
        assert count >= 1
        _resp, lines, _octets = p.retr(count)
        assert b"Subject: pop" in lines
    finally:
        p.quit()
    assert c.locate("ann@shared.test") == "b3"


@needs_imap
def test_two_backend_cluster_symmetric_cut_one_side_serves(cluster_factory: Any) -> None:
    """Both backends keep the shared storage, the link between them is cut:
    the Controller keeps the cluster, the other stops serving, no second
    Controller is ever elected."""
    from dynamail.cluster.election import ElectionStore

    c = cluster_factory(2)
    provision(c, "b1")
    st = c.wait_controller()
    ctl = st["controller"]
    other = next(n for n in c.names() if n != ctl)
    _place_on(c, other)
    cut(c, ctl, True)  # every cluster connection of the Controller: a symmetric cut
    c.wait(lambda: "lease lost" in c.logs(other), what=f"{other} to stop serving")
    login_select(c, ctl)  # the account moved to the Controller
    time.sleep(4 * LEASE)
    store = ElectionStore(c.dir / "shared")
    assert store.highest_epoch() == 1
    assert "became controller" not in c.logs(other)
    cut(c, ctl, False)
    st = c.wait_controller()
    assert st["controller"] == ctl and st["backup"] == other
    from dynamail.storage import epochs_monotonic

    assert epochs_monotonic(c.mail_path("shared.test", "ann"))


@needs_imap
def test_sigstop_of_an_owner_past_its_lease(cluster_factory: Any) -> None:
    c = cluster_factory(3)
    provision(c, "b1")
    st = c.wait_controller()
    owner = next(n for n in c.names() if n not in (st["controller"], st["backup"]))
    _place_on(c, owner)
    c.kill(owner, "STOP")
    try:
        c.wait(lambda: not next(m for m in c.status()["members"] if m["name"] == owner)["alive"],
               what="the paused owner to be declared dead")
        via = st["controller"]
        conn = c.imap(via, "ann@shared.test", PASSWORD)
        conn.select("INBOX")
        assert conn.append("INBOX", None, None, b"Subject: moved\r\n\r\nz\r\n")[0] == "OK"
        conn.logout()
        assert c.locate("ann@shared.test") != owner
    finally:
        c.kill(owner, "CONT")
    c.wait(lambda: "lease lost" in c.logs(owner), what="the woken owner to close its accounts")
    c.wait_controller()
    assert "moved" in subjects(c, owner)
    from dynamail.storage import epochs_monotonic

    assert epochs_monotonic(c.mail_path("shared.test", "ann"))


@needs_imap
def test_network_partition_with_namespaces(netns_cluster: Any) -> None:
    """Each backend in its own network namespace; the owner's link is taken
    down (a real partition: it keeps the shared storage).  It stops serving,
    the others take its account over, nobody else becomes Controller, and
    after the link comes back it re-joins."""
    from dynamail.cluster.election import ElectionStore
    from dynamail.storage import epochs_monotonic

    c, topo = netns_cluster(3)
    provision(c, "b1")
    st = c.wait_controller()
    victim = next(n for n in c.names() if n not in (st["controller"], st["backup"]))
    _place_on(c, victim)
    epoch = ElectionStore(c.dir / "shared").highest_epoch()
    topo.cut(int(victim[1:]), True)
    c.wait(lambda: "lease lost" in c.logs(victim), what="the cut-off owner to stop serving")
    rest = [n for n in c.names() if n != victim]
    login_select(c, rest[0])
    assert c.locate("ann@shared.test") in rest
    conn = c.imap(rest[1], "ann@shared.test", PASSWORD)
    conn.select("INBOX")
    assert conn.append("INBOX", None, None, b"Subject: during-partition\r\n\r\nz\r\n")[0] == "OK"
    conn.logout()
    assert ElectionStore(c.dir / "shared").highest_epoch() == epoch  # no split brain
    assert "became controller" not in c.logs(victim)
    topo.cut(int(victim[1:]), False)
    c.wait(lambda: next(m for m in c.status()["members"] if m["name"] == victim)["alive"],
           what="the member to re-join")
    assert c.status()["controller"] == st["controller"]
    assert "during-partition" in subjects(c, victim)
    assert epochs_monotonic(c.mail_path("shared.test", "ann"))


@needs_imap
def test_controller_cut_off_by_the_network_is_replaced(netns_cluster: Any) -> None:
    """The Controller's link goes down while it keeps the shared storage (its
    heartbeat record stays fresh): the Backup, which still hears from the
    third backend, takes over; the old Controller sees the newer epoch and
    steps down; after healing it re-joins as an ordinary member."""
    from dynamail.cluster.election import ElectionStore
    from dynamail.storage import epochs_monotonic

    c, topo = netns_cluster(3)
    provision(c, "b1", ("ann", "bob"))
    st = c.wait_controller()
    old = st["controller"]
    keeper = next(n for n in c.names() if n != old)
    _place_on(c, keeper, "bob@shared.test")
    _place_on(c, old)
    epoch = ElectionStore(c.dir / "shared").highest_epoch()
    topo.cut(int(old[1:]), True)
    st = c.wait_controller(exclude=(old,))
    assert ElectionStore(c.dir / "shared").highest_epoch() == epoch + 1
    c.wait(lambda: "stepping down" in c.logs(old), what="the old controller to step down")
    rest = [n for n in c.names() if n != old]
    login_select(c, rest[0])
    assert c.locate("ann@shared.test") in rest
    # the members that were not cut kept their accounts through the change
    # (the new Controller learns it from the keeper's resync)
    c.wait(lambda: c.locate("bob@shared.test") == keeper, what=f"bob located on {keeper}")
    assert all("lease lost" not in c.logs(n) for n in rest), [c.logs(n)[-2000:] for n in rest]
    topo.cut(int(old[1:]), False)
    c.wait(lambda: next(m for m in c.status()["members"] if m["name"] == old)["alive"],
           what="the old controller to re-join")
    assert c.status()["controller"] == st["controller"]
    assert epochs_monotonic(c.mail_path("shared.test", "ann"))


@needs_imap
def test_member_cut_from_the_controller_finds_holders_through_peers(netns_cluster: Any) -> None:
    """A member that cannot reach the Controller (the link between the two
    only is cut; the Controller still hears the others, so nobody takes
    over) still relays sessions of an account another member holds: it asks
    the members it reaches which one holds it (``Locate(holder)``).  An
    account held by the unreachable Controller itself stays unavailable."""
    c, topo = netns_cluster(3)
    provision(c, "b1", ("ann", "bob"))
    st = c.wait_controller()
    ctl = st["controller"]
    keeper, asker = [n for n in c.names() if n != ctl]
    _place_on(c, keeper, "bob@shared.test")
    _place_on(c, ctl, "ann@shared.test")
    topo.block(int(asker[1:]), int(ctl[1:]), True)
    try:
        time.sleep(3 * LEASE)  # past the asker's lease: no Controller answers it now
        for _ in range(3):
            conn = c.imap(asker, "bob@shared.test", PASSWORD)
            assert conn.select("INBOX")[0] == "OK"
            conn.logout()
        assert f"no controller answered; {keeper} holds it" in c.logs(asker)
        assert c.status()["controller"] == ctl  # nobody took over
        with pytest.raises(imaplib.IMAP4.error):
            c.imap(asker, "ann@shared.test", PASSWORD)
    finally:
        topo.block(int(asker[1:]), int(ctl[1:]), False)
    login_select(c, asker)


@needs_imap
def test_a_holder_cut_from_the_controller_alone_serves_no_stale_reads(netns_cluster: Any) -> None:
    """Only the link between the Controller and the holder of an account is
    cut; the holder still hears the third member, which still hears the
    Controller.  The Controller frees the account at T + m and the third
    member takes it: the holder must have let it go by then (its lease
    lapsed; the third member says it still hears the Controller, so the
    holder does not hold on as if the Controller were the one cut off).
    Once the third member acknowledged an EXPUNGE, no session through the
    holder sees the expunged messages again."""
    c, topo = netns_cluster(3)
    provision(c, "b1", ("ann",))
    st = c.wait_controller()
    ctl = st["controller"]
    holder, third = [n for n in c.names() if n != ctl]
    _place_on(c, holder, "ann@shared.test")
    conn = c.imap(holder, "ann@shared.test", PASSWORD)
    for i in range(3):
        assert conn.append("INBOX", None, None, f"Subject: m{i}\r\n\r\nbody\r\n".encode())[0] == "OK"
    assert conn.select("INBOX")[1] == [b"3"]
    topo.block(int(holder[1:]), int(ctl[1:]), True)
    try:
        c.wait(lambda: c.locate("ann@shared.test") != holder, what=f"the Controller frees {holder}'s ann")
        deadline = time.monotonic() + 30
        while True:  # through the third member, as soon as the Controller gives it the account
            try:
                other = c.imap(third, "ann@shared.test", PASSWORD)
                if other.select("INBOX")[0] == "OK":
                    break
            except (imaplib.IMAP4.error, OSError, EOFError):
                pass
            assert time.monotonic() < deadline, "ann never became available through the third member"
            time.sleep(0.05)
        assert other.store("1:*", "+FLAGS", "\\Deleted")[0] == "OK"
        assert other.expunge()[0] == "OK"
        expunged = time.monotonic()
        other.logout()
        # the holder's open session and new sessions through the holder, for
        # the 3T the holder would have held on before
        while time.monotonic() < expunged + 3 * LEASE:
            with contextlib.suppress(imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError, EOFError):
                conn.noop()  # where the session may learn of the EXPUNGE
                typ, data = conn.fetch("1:*", "(UID)")
                assert not (typ == "OK" and data and data[0]), f"the holder's session shows {data}"
            with contextlib.suppress(imaplib.IMAP4.error, OSError, EOFError):
                again = c.imap(holder, "ann@shared.test", PASSWORD)
                typ, data = again.select("INBOX")
                assert not (typ == "OK" and data != [b"0"]), f"a new session through {holder} shows {data}"
                with contextlib.suppress(Exception):
                    again.logout()
            time.sleep(0.1)
    finally:
        topo.block(int(holder[1:]), int(ctl[1:]), False)
    assert login_select(c, holder) == 0


@needs_imap
def test_cluster_links_run_over_tls_bound_to_the_handshake(cluster_factory: Any) -> None:
    """The cluster port is TLS 1.2 with a tls-unique channel binding (which
    the handshake proofs mix in); relays go to the owner's IMAPS port."""
    import socket

    from dynamail.cluster.peer import client_tls

    c = cluster_factory(2)
    m = c.member("b1")
    with socket.create_connection((m["host"], m["cluster_port"]), timeout=10) as raw, \
            client_tls().wrap_socket(raw) as s:
        assert s.version() == "TLSv1.2"
        assert s.get_channel_binding("tls-unique")
    provision(c, "b1")
    _place_on(c, "b2")
    login_select(c, "b1")  # relayed from b1 to b2 over TLS
    assert c.locate("ann@shared.test") == "b2"


@needs_imap
def test_plaintext_cluster_links_with_tls_false(cluster_factory: Any) -> None:
    """``[cluster] tls = false`` on every member: the plaintext protocol of
    earlier releases, relays to the owner's plain IMAP port."""
    import socket
    import ssl

    c = cluster_factory(2, cluster_settings="tls = false")
    m = c.member("b1")
    with socket.create_connection((m["host"], m["cluster_port"]), timeout=10) as raw:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw)
    provision(c, "b1")
    _place_on(c, "b2")
    login_select(c, "b1")
    assert c.locate("ann@shared.test") == "b2"


@needs_imap
def test_nonready_drain_moves_idle_accounts_at_once_and_busy_ones_after_grace(
        cluster_factory: Any) -> None:
    import socket

    c = cluster_factory(3)
    provision(c, "b1", ("ann", "bob"))
    for n in ("b1", "b3"):
        launcher.set_ready(c.dir, n, False)
    c.wait(lambda: [m["name"] for m in c.status()["members"] if m["ready"]] == ["b2"],
           what="only b2 ready")
    login_select(c, "b1", "ann@shared.test")
    m = c.member("b1")
    s = socket.create_connection((m["host"], m["ports"]["imap"]), timeout=30)
    f = s.makefile("rwb")
    f.readline()
    f.write(f"a1 LOGIN bob@shared.test {PASSWORD}\r\na2 SELECT INBOX\r\n".encode())
    f.flush()
    while not f.readline().startswith(b"a2 OK"):
        pass
    assert c.locate("ann@shared.test") == "b2" and c.locate("bob@shared.test") == "b2"
    for n in ("b1", "b3"):
        launcher.set_ready(c.dir, n, True)

    from click.testing import CliRunner

    from dynamail.cli.main import main

    result = CliRunner().invoke(main, ["cluster", "nonready", "--drain", "--grace", "3",
                                       "--dir", str(c.dir), "b2"])
    assert result.exit_code == 0, result.output
    # the idle account is released at once
    c.wait(lambda: c.locate("ann@shared.test") == "", what="ann released")
    assert not next(x for x in c.status()["members"] if x["name"] == "b2")["ready"]
    # the busy one stays open until the grace period ends (only accounts still
    # open then get the goodbye): the relayed session is told to reconnect and ended
    rest = b""
    while True:
        line = f.readline()
        if not line:
            break
        rest += line
    s.close()
    assert b"* BYE [UNAVAILABLE]" in rest, rest
    c.wait(lambda: c.locate("bob@shared.test") != "b2", what="bob released by b2")
    # clients reconnect and reach the accounts on another backend
    login_select(c, "b2", "bob@shared.test")
    login_select(c, "b3", "ann@shared.test")
    assert c.locate("bob@shared.test") in ("b1", "b3")
    assert c.locate("ann@shared.test") in ("b1", "b3")


def test_nonready_frontend_closes_client_ports_but_the_http_admin_port(
        cluster_factory: Any) -> None:
    import socket

    def is_open(host: str, port: int) -> bool:
        try:
            with socket.create_connection((host, port), timeout=2):
                return True
        except OSError:
            return False

    c = cluster_factory(2, frontends=1)
    f = c.member("f1")
    client_ports = {n: p for n, p in f["ports"].items() if n not in ("http", "https")}  # admin ports stay
    assert client_ports and all(is_open(f["host"], p) for p in client_ports.values())
    launcher.set_ready(c.dir, "f1", False)
    c.wait(lambda: not any(is_open(f["host"], p) for p in client_ports.values()),
           what="every client port of f1 closed")
    assert is_open(f["host"], f["ports"]["http"]) and is_open(f["host"], f["ports"]["https"])
    c.wait(lambda: not next(m for m in c.status()["members"] if m["name"] == "f1")["ready"],
           what="the status to show f1 Non-Ready")
    launcher.set_ready(c.dir, "f1", True)
    c.wait(lambda: all(is_open(f["host"], p) for p in client_ports.values()),
           what="every client port of f1 open again")
    assert next(m for m in c.status()["members"] if m["name"] == "f1")["ready"]


@needs_imap
def test_drain_through_the_json_api(cluster_factory: Any) -> None:
    import base64
    import json
    import urllib.request

    c = cluster_factory(2)
    provision(c, "b1")
    _place_on(c, "b2")
    m, admin = c.member("b1"), c.data["admin"]
    req = urllib.request.Request(
        f"http://{m['host']}:{m['ports']['http']}/api/v1/cluster/members/b2/nonready?drain=30",
        method="POST")
    token = base64.b64encode(f"{admin['user']}:{admin['password']}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read()) == {"ok": True, "member": "b2", "ready": False, "drain": 30}
    c.wait(lambda: c.locate("ann@shared.test") == "", what="ann released by the drained b2")
    login_select(c, "b2")
    assert c.locate("ann@shared.test") == "b1"


@pytest.mark.skipif(not have("dynamail.pop3.adapter"), reason="POP3 server not built")
def test_drain_ends_a_pop3_session_with_sys_temp(cluster_factory: Any) -> None:
    import poplib

    from dynamail.net.tls import client_context_insecure

    c = cluster_factory(2)
    provision(c, "b1")
    _place_on(c, "b2")
    m = c.member("b2")
    p = poplib.POP3(m["host"], m["ports"]["pop3"], timeout=30)
    p.stls(client_context_insecure())
    p.user("ann@shared.test")
    p.pass_(PASSWORD)
    p.stat()
    launcher.set_ready(c.dir, "b2", False, drain=0.5)
    rest = b""
    while True:
        line = p.file.readline()
        if not line:
            break
        rest += line
    p.close()
    assert rest.startswith(b"-ERR [SYS/TEMP]"), rest
    c.wait(lambda: c.locate("ann@shared.test") != "b2", what="ann released by b2")
    login_select(c, "b2")
    assert c.locate("ann@shared.test") == "b1"
