"""Maildir and mbox trees imported through the real storage engine: every
message arrives with its body, flags and internal date; broken entries are
counted, never fatal; a re-run imports nothing twice."""

from __future__ import annotations

import asyncio
import datetime
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.migrate.corpus import Expected, make_maildir, make_mbox, message

from dynamail.migrate import ImportFailed, import_into
from dynamail.storage import FileAccountStore, FileMailStore

T = TypeVar("T")
BASE = 1_700_000_000


def with_store(path: Path, fn: Callable[[FileAccountStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = await FileMailStore().open_account(path, 1)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


async def contents(store: FileAccountStore) -> dict[str, list[tuple[datetime.datetime, bytes, frozenset[str]]]]:
    out: dict[str, list[tuple[datetime.datetime, bytes, frozenset[str]]]] = {}
    for listing in await store.list_mailboxes():
        view = await store.select(listing.name, read_only=True)
        rows = []
        for uid in view.uids():
            info = view.info(uid)
            data = await view.read(uid)
            assert info.size == len(data)
            rows.append((info.internal_date, data.replace(b"\r\n", b"\n"), info.flags))
        view.close()
        if rows:
            out[listing.name] = sorted(rows, key=lambda r: (r[0], r[1]))
    return out


def expected_rows(exp: Expected) -> dict[str, list[tuple[datetime.datetime, bytes, frozenset[str]]]]:
    return {mb: sorted(((w, d.replace(b"\r\n", b"\n"), f) for d, f, w in rows), key=lambda r: (r[0], r[1]))
            for mb, rows in exp.messages.items()}


def run_import(acct: Path, src: Path, fmt: str, ledger: Path | None) -> tuple[dict[str, Any], Any]:
    async def go(store: FileAccountStore) -> tuple[dict[str, Any], Any]:
        report = await import_into(store, str(src), fmt, ledger_path=ledger)
        return report.as_json(), await contents(store)

    return with_store(acct, go)


@pytest.mark.parametrize("fmt", ["maildir", "auto"])
def test_maildir_round_trip_and_reimport(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "Maildir"
    exp = make_maildir(src, 320)
    acct, ledger = tmp_path / "acct", tmp_path / "ledger"
    report, got = run_import(acct, src, fmt, ledger)
    assert report["format"] == "maildir"
    assert report["imported"] == exp.total == 320
    assert report["skipped"] == exp.skipped, report["problems"]
    assert report["complete"]
    assert got == expected_rows(exp)
    assert {"Sent", "Work/Projects", "Entwürfe/Alt"} <= set(report["created"])
    assert b"secret" not in repr(got).encode() and "outside" not in repr(got)
    reasons = " ".join(p["reason"] for p in report["problems"])
    for word in ("empty", "symbolic link", "not a regular file", "folder name"):
        assert word in reasons

    # the same tree again: nothing new
    report2, got2 = run_import(acct, src, fmt, ledger)
    assert (report2["imported"], report2["duplicates"]) == (0, 320)
    assert got2 == got

    # the tree grows: only the new messages arrive
    extra = message(random.Random(9), 999)
    new = src / ".Sent" / "cur" / "99.new:2,S"
    new.write_bytes(extra)
    report3, got3 = run_import(acct, src, fmt, ledger)
    assert (report3["imported"], report3["duplicates"]) == (1, 320)
    assert sum(len(v) for v in got3.values()) == 321


def test_special_use_given_to_known_folder_names(tmp_path: Path) -> None:
    src = tmp_path / "Maildir"
    make_maildir(src, 20)
    acct = tmp_path / "acct"
    run_import(acct, src, "maildir", None)

    async def listing(store: FileAccountStore) -> dict[str, str | None]:
        return {m.name: m.special_use for m in await store.list_mailboxes()}

    assert with_store(acct, listing)["Sent"] == "\\Sent"


def test_mbox_file_round_trip(tmp_path: Path) -> None:
    exp = Expected()
    src = tmp_path / "inbox.mbox"
    make_mbox(src, 300, "INBOX", exp)
    acct, ledger = tmp_path / "acct", tmp_path / "ledger"
    report, got = run_import(acct, src, "auto", ledger)
    assert report["format"] == "mbox"
    assert (report["imported"], report["skipped"]) == (300, exp.skipped), report["problems"]
    assert got == expected_rows(exp)
    report2, _ = run_import(acct, src, "mbox", ledger)
    assert (report2["imported"], report2["duplicates"]) == (0, 300)


def test_mbox_tree(tmp_path: Path) -> None:
    exp = Expected()
    root = tmp_path / "mail"
    (root / "Archive.sbd").mkdir(parents=True)
    make_mbox(root / "inbox", 40, "INBOX", exp, seed=3)
    make_mbox(root / "Sent", 30, "Sent", exp, seed=4, garbage=False)
    make_mbox(root / "Archive.sbd" / "2019", 25, "Archive/2019", exp, seed=5, garbage=False)
    (root / "inbox.msf").write_bytes(b"// index, ignored\n")
    (root / "notes.txt").write_bytes(b"just some text\nno separator\n")
    exp.skipped += 1
    report, got = run_import(tmp_path / "acct", root, "auto", None)
    assert report["format"] == "mbox"
    assert report["imported"] == exp.total == 95
    assert report["skipped"] == exp.skipped, report["problems"]
    assert got == expected_rows(exp)


def test_identical_messages_in_one_folder_are_both_kept(tmp_path: Path) -> None:
    src = tmp_path / "m.mbox"
    body = b"Subject: same\n\nsame body\n"
    src.write_bytes(b"From a Thu Jan  1 00:00:00 2015\n" + body + b"\n"
                    b"From a Thu Jan  1 00:00:00 2015\n" + body + b"\n")
    acct, ledger = tmp_path / "acct", tmp_path / "ledger"
    report, got = run_import(acct, src, "mbox", ledger)
    assert report["imported"] == 2 and len(got["INBOX"]) == 2
    src.write_bytes(src.read_bytes() + b"From a Thu Jan  1 00:00:00 2015\n" + body)
    report, got = run_import(acct, src, "mbox", ledger)
    assert (report["imported"], report["duplicates"]) == (1, 2)
    assert len(got["INBOX"]) == 3


def test_oversized_and_torn_ledger(tmp_path: Path) -> None:
    src = tmp_path / "m.mbox"
    big = b"Subject: big\n\n" + b"x" * 5000 + b"\n"
    small = b"Subject: small\n\nhello\n"
    src.write_bytes(b"From a Thu Jan  1 00:00:00 2015\n" + big + b"\nFrom b Thu Jan  1 00:00:01 2015\n" + small)
    acct, ledger = tmp_path / "acct", tmp_path / "ledger"

    async def go(store: FileAccountStore) -> dict[str, Any]:
        return (await import_into(store, str(src), "mbox", ledger_path=ledger, limit=1000)).as_json()

    report = with_store(acct, go)
    assert (report["imported"], report["skipped"]) == (1, 1)
    assert "larger than" in report["problems"][0]["reason"]
    with open(ledger, "ab") as f:
        f.write(b"0123")  # a torn tail: ignored, the next run still works
    report = with_store(acct, go)
    assert (report["imported"], report["duplicates"], report["skipped"]) == (0, 1, 1)


def test_maildir_format_refused_for_non_maildir(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()

    async def go(store: FileAccountStore) -> None:
        await import_into(store, str(tmp_path / "plain"), "maildir")

    with pytest.raises(ImportFailed):
        with_store(tmp_path / "acct", go)


def test_internal_date_falls_back_to_date_header(tmp_path: Path) -> None:
    src = tmp_path / "m.mbox"
    src.write_bytes(b"From someone-without-a-date\nDate: Tue, 01 Feb 2022 10:00:00 +0100\nSubject: x\n\nbody\n")
    report, got = run_import(tmp_path / "acct", src, "mbox", None)
    assert report["imported"] == 1
    when = got["INBOX"][0][0]
    assert when == datetime.datetime(2022, 2, 1, 9, 0, tzinfo=datetime.UTC)


def test_keyword_table_full_keeps_the_messages(tmp_path: Path) -> None:
    # a mailbox holds at most 59 keywords: later messages arrive without theirs
    src = tmp_path / "m.mbox"
    with open(src, "wb") as f:
        for n in range(70):
            f.write(b"From a Thu Jan  1 00:00:00 2015\nSubject: %d\nX-Keywords: kw%d\n\nbody %d\n\n" % (n, n, n))
    report, got = run_import(tmp_path / "acct", src, "mbox", None)
    assert (report["imported"], report["skipped"]) == (70, 0)
    rows = got["INBOX"]
    assert len(rows) == 70
    with_kw = [r for r in rows if r[2]]
    assert len(with_kw) == 59
    assert all(r[2] == frozenset({"kw" + r[1].split(b"Subject: ")[1].split(b"\n")[0].decode()}) for r in with_kw)
    assert sum("without its keywords" in p["reason"] for p in report["problems"]) == 11


async def _uid_order(store: FileAccountStore, mailbox: str) -> list[bytes]:
    view = await store.select(mailbox, read_only=True)
    subjects = [(await view.header(uid)).split(b"\r\n")[0] for uid in view.uids()]
    view.close()
    return subjects


def test_maildir_order_follows_dovecot_uidlist_else_dates(tmp_path: Path) -> None:
    src = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (src / sub).mkdir(parents=True)
    # names sort differently from both the dates and the UIDs
    files = {"c.host:2,S": ("cur", 300, 2), "a.host": ("new", 200, 3), "b.host:2,": ("cur", 100, 1)}
    for name, (sub, when, _uid) in files.items():
        path = src / sub / name
        path.write_bytes(b"Subject: " + name.split(":")[0].encode() + b"\n\nx\n")
        os.utime(path, (BASE + when, BASE + when))

    async def order(store: FileAccountStore) -> list[bytes]:
        await import_into(store, str(src), "maildir")
        return await _uid_order(store, "INBOX")

    by_date = with_store(tmp_path / "acct1", order)
    assert by_date == [b"Subject: b.host", b"Subject: a.host", b"Subject: c.host"]
    (src / "dovecot-uidlist").write_text(
        "3 V1 N4 Gabc\n" + "".join(f"{uid} W12 :{name.split(':')[0]}\n"
                                   for name, (_s, _w, uid) in files.items() if uid != 3)
        + "3 a.host\n")  # an old-style line
    by_uid = with_store(tmp_path / "acct2", order)
    assert by_uid == [b"Subject: b.host", b"Subject: c.host", b"Subject: a.host"]


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_unusable_ledger_refuses_the_import(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "m.mbox"
    src.write_bytes(b"From a Thu Jan  1 00:00:00 2015\nSubject: x\n\nbody\n")
    ledger = tmp_path / "ledger"
    if kind == "directory":
        ledger.mkdir()
    else:
        ledger.symlink_to("/dev/zero")

    async def go(store: FileAccountStore) -> None:
        await import_into(store, str(src), "mbox", ledger_path=ledger)

    with pytest.raises(ImportFailed, match="ledger"):
        with_store(tmp_path / "acct", go)

    async def count(store: FileAccountStore) -> int:
        return (await store.status("INBOX")).messages

    assert with_store(tmp_path / "acct", count) == 0
