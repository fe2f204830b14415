"""Import into a shared account of a real two-backend local cluster: the
member that reads the files opens the account; another member refuses while
the account is open elsewhere; the mail is then served by every member."""

from __future__ import annotations

import contextlib
import imaplib
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.clients import admin_cli, count_when_available
from tests.migrate.corpus import make_maildir

from dynamail.cluster import launcher

pytestmark = [pytest.mark.xdist_group("migrate-cluster"), pytest.mark.slow, pytest.mark.timeout(240)]

PREFIX = "127.0.10"
OFFSET = 20000
PASSWORD = "pw-Import-1"


def _free_first_host(count: int) -> int:
    for _ in range(200):
        first = random.randrange(20, 250 - count)
        try:
            for i in range(count):
                with socket.socket() as s:
                    s.bind((f"{PREFIX}.{first + i}", launcher.CLUSTER_PORT + OFFSET))
        except OSError:
            continue
        return first
    raise RuntimeError("no free loopback addresses")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "cluster"
    launcher.up(d, 2, port_offset=OFFSET, prefix=PREFIX, first_host=_free_first_host(2),
                lease=1.0, margin=0.2, heartbeat=0.15, timeout=60.0)
    try:
        yield d
    finally:
        with contextlib.suppress(Exception):
            launcher.down(d, timeout=5.0)


def member(d: Path, name: str) -> dict[str, Any]:
    return next(m for m in launcher.read_cluster(d)["members"] if m["name"] == name)


def cli(d: Path, name: str, *commands: str) -> list[str]:
    return admin_cli(member(d, name), launcher.read_cluster(d)["admin"], *commands, timeout=60)


def message_count(d: Path, name: str) -> int:
    m = member(d, name)

    def connect() -> imaplib.IMAP4:
        conn = imaplib.IMAP4(m["host"], m["ports"]["imap"], timeout=15)
        conn.login("ann@shared.test", PASSWORD)
        return conn

    return count_when_available(connect, "ann", name, readonly=True)


def test_import_into_shared_account(cluster: Path, tmp_path: Path) -> None:
    from dynamail.cliproto.datafmt import parse

    out = cli(cluster, "b1", "CREATEDOMAIN shared.test SHARED",
              f'CREATEACCOUNT ann@shared.test {{Password="{PASSWORD}";}}')
    assert all(line.startswith("200") for line in out), out
    src = tmp_path / "Maildir"
    exp = make_maildir(src, 60)
    (reply,) = cli(cluster, "b2", f'IMPORTMAIL ann@shared.test FROM "{src}"')
    report = parse(reply)
    assert (report["imported"], report["skipped"]) == (60, exp.skipped), reply
    assert launcher.locate(cluster, "ann@shared.test") == "b2"  # opened where the files were read
    (refused,) = cli(cluster, "b1", f'IMPORTMAIL ann@shared.test FROM "{src}"')
    assert refused.startswith("5") and "b2" in refused, refused
    # served through either member (b1 relays to b2)
    assert message_count(cluster, "b1") == len(exp.messages["INBOX"])
    assert message_count(cluster, "b2") == len(exp.messages["INBOX"])
