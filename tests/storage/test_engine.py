"""Behaviour of FileAccountStore / FileMailboxView through the public interface."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
from pathlib import Path

import pytest

from dynamail.storage import (
    AppendRequest,
    FileAccountStore,
    FileMailStore,
    MailboxExists,
    NoSuchMailbox,
    QuotaExceeded,
    StorageError,
)

from .harness import with_account

MSG = b"From: Ann <ann@example.org>\nTo: bob@example.net\nSubject: hello\n\nHello Bob\n"


def test_append_read_reopen(account_dir: Path) -> None:
    when = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))

    async def first(store: FileAccountStore) -> list[int]:
        return await store.append("INBOX", [AppendRequest(MSG, frozenset({"\\Seen", "$Work"}), when)])

    assert with_account(account_dir, first) == [1]

    async def second(store: FileAccountStore) -> None:
        view = await store.select("inbox")
        assert list(view.uids()) == [1]
        info = view.info(1)
        assert info.flags == {"\\Seen", "$Work"}
        assert info.internal_date == when
        assert info.size == len(MSG.replace(b"\n", b"\r\n"))
        assert await view.read(1) == MSG.replace(b"\n", b"\r\n")
        assert await view.header(1) == b"From: Ann <ann@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\n"
        assert await view.part(1, [1]) == b"Hello Bob\r\n"
        env = await view.envelope(1)
        assert env[1] == "hello"  # type: ignore[index]
        assert env[2] == [["Ann", None, "ann", "example.org"]]  # type: ignore[index]
        f, off, length = await view.open_body(1)
        f.seek(off)
        assert f.read(length) == MSG.replace(b"\n", b"\r\n")
        assert await view.read_range(1, 6, 3) == b"Ann"
        view.close()

    with_account(account_dir, second, epoch=2)


def test_uids_ascending_and_status(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        uids = await store.append("INBOX", [AppendRequest(MSG), AppendRequest(MSG, frozenset({"\\Seen"}))])
        assert uids == [1, 2]
        st = await store.status("INBOX")
        assert (st.messages, st.unseen, st.uidnext) == (2, 1, 3)
        assert st.highestmodseq >= 1
        view = await store.select("INBOX")
        await view.store([2], "add", frozenset({"\\Deleted"}))
        assert await view.expunge() == [2]
        assert list(view.uids()) == [1]
        assert (await store.append("INBOX", [AppendRequest(MSG)])) == [3]
        assert await store.quota_usage() == (2 * len(MSG.replace(b"\n", b"\r\n")), 2)

    with_account(account_dir, body)


def test_store_modes_and_unchangedsince(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(MSG)] * 3)
        view = await store.select("INBOX")
        r = await view.store([1, 2], "add", frozenset({"\\Flagged", "work"}))
        assert r.modified == [1, 2]
        ms = view.info(1).modseq
        r = await view.store([1], "add", frozenset({"\\Flagged"}))
        assert r.modified == []  # no change, no new MODSEQ
        assert view.info(1).modseq == ms
        r = await view.store([1, 3], "set", frozenset({"\\Seen"}), unchanged_since=ms - 1)
        assert r.failed_unchangedsince == [1] and r.modified == [3]
        r = await view.store([2], "remove", frozenset({"work"}))
        assert view.info(2).flags == {"\\Flagged"}

    with_account(account_dir, body)


def test_mailbox_management(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.create_mailbox("Work")
        await store.create_mailbox("Work/Projects")
        await store.create_mailbox("Sent", special_use="\\Sent")
        with pytest.raises(MailboxExists):
            await store.create_mailbox("Work")
        await store.append("Work/Projects", [AppendRequest(MSG)])
        await store.subscribe("Work/Projects")
        await store.rename_mailbox("Work", "Jobs")
        names = {m.name: m for m in await store.list_mailboxes()}
        assert set(names) == {"INBOX", "Jobs", "Jobs/Projects", "Sent"}
        assert names["Jobs"].has_children and names["Jobs/Projects"].subscribed
        assert names["Sent"].special_use == "\\Sent"
        assert (await store.status("Jobs/Projects")).messages == 1
        with pytest.raises(NoSuchMailbox):
            await store.status("Work/Projects")
        await store.delete_mailbox("Jobs/Projects")
        with pytest.raises(NoSuchMailbox):
            await store.select("Jobs/Projects")
        with pytest.raises(StorageError):
            await store.delete_mailbox("INBOX")

    with_account(account_dir, body)
    names = with_account(account_dir, lambda s: s.list_mailboxes(), epoch=2)
    assert [m.name for m in names] == ["INBOX", "Jobs", "Sent"]


def test_inbox_rename_moves_messages(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.create_mailbox("INBOX/Child")
        await store.append("INBOX", [AppendRequest(MSG)] * 2)
        old_uv = (await store.status("INBOX")).uidvalidity
        await store.rename_mailbox("INBOX", "Old")
        assert (await store.status("Old")).messages == 2
        inbox = await store.status("INBOX")
        assert inbox.messages == 0 and inbox.uidvalidity != old_uv
        assert {m.name for m in await store.list_mailboxes()} == {"INBOX", "INBOX/Child", "Old"}
        await store.append("INBOX", [AppendRequest(MSG)])
        await store.rename_mailbox("INBOX", "INBOX/2024")  # into its own hierarchy: allowed for INBOX
        assert (await store.status("INBOX/2024")).messages == 1
        await store.rename_mailbox("Old", "Archive/2023/Old")  # superior names are created
        names = {m.name for m in await store.list_mailboxes()}
        assert names == {"INBOX", "INBOX/Child", "INBOX/2024", "Archive", "Archive/2023", "Archive/2023/Old"}
        assert (await store.status("Archive/2023/Old")).messages == 2

    with_account(account_dir, body)


def test_copy_and_move(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.create_mailbox("Archive", "\\Archive")
        await store.append("INBOX", [AppendRequest(MSG, frozenset({"\\Seen"})), AppendRequest(MSG + b"2\n")])
        view = await store.select("INBOX")
        res = await view.copy([1, 2], "Archive")
        assert res.source_uids == [1, 2] and res.dest_uids == [1, 2]
        res = await view.move([2], "Archive")
        assert res.dest_uids == [3]
        assert list(view.uids()) == [1]
        arch = await store.select("Archive")
        assert list(arch.uids()) == [1, 2, 3]
        assert arch.info(1).flags == {"\\Seen"}
        assert await arch.read(3) == (MSG + b"2\n").replace(b"\n", b"\r\n")
        assert await arch.envelope(3) == await view.envelope(1)

    with_account(account_dir, body)


def test_change_feed_between_views(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(MSG)] * 3)
        a = await store.select("INBOX")
        b = await store.select("INBOX")
        waiter = asyncio.create_task(b.wait_for_change(5.0))
        await asyncio.sleep(0)
        await a.store([1], "add", frozenset({"\\Seen"}))
        assert await waiter is True
        await a.store([2], "add", frozenset({"\\Deleted"}))
        await a.expunge()
        await store.append("INBOX", [AppendRequest(MSG)])
        assert list(b.uids()) == [1, 2, 3]  # nothing shifts before refresh
        assert b.info(2).uid == 2  # expunged elsewhere, still readable
        assert await b.read(2) == MSG.replace(b"\n", b"\r\n")
        ch = await b.refresh()
        assert ch.added == [4] and ch.expunged == [2] and 1 in ch.flags_changed
        assert list(b.uids()) == [1, 3, 4]
        ch = await a.refresh()
        assert ch.expunged == [] and ch.added == [4] and ch.flags_changed == []
        assert await b.wait_for_change(0.01) is False

    with_account(account_dir, body)


def test_search_text(account_dir: Path) -> None:
    qp = (
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n\nSch=C3=B6ne Gr=C3=BC=C3=9Fe\n"
    )

    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(MSG), AppendRequest(qp)])
        v = await store.select("INBOX")
        assert await v.search_text(v.uids(), "SUBJECT", "HELLO") == [1]
        assert await v.search_text(v.uids(), "Subject", "grüße") == [2]
        assert await v.search_text(v.uids(), "BODY", "schöne") == [2]
        assert await v.search_text(v.uids(), "TEXT", "bob") == [1]
        assert await v.search_text(v.uids(), "BODY", "bob@example") == []
        assert await v.search_text(v.uids(), "cc", "") == []

    with_account(account_dir, body)


def test_quota(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        store.set_quota(None, 2)
        await store.append("INBOX", [AppendRequest(MSG)] * 2)
        with pytest.raises(QuotaExceeded):
            await store.append("INBOX", [AppendRequest(MSG)])
        assert (await store.status("INBOX")).messages == 2

    with_account(account_dir, body)


def test_group_commit_many_writers(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        results = await asyncio.gather(*(store.append("INBOX", [AppendRequest(MSG)]) for _ in range(64)))
        uids = sorted(u for r in results for u in r)
        assert uids == list(range(1, 65))

    with_account(account_dir, body)
    assert with_account(account_dir, lambda s: s.status("INBOX"), epoch=2).messages == 64


def test_read_only_view_refuses_changes(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(MSG)])
        v = await store.select("INBOX", read_only=True)
        with pytest.raises(StorageError):
            await v.store([1], "add", frozenset({"\\Seen"}))

    with_account(account_dir, body)


def test_recorded_epoch(account_dir: Path) -> None:
    ms = FileMailStore()
    assert ms.recorded_epoch(account_dir) == 0
    with_account(account_dir, lambda s: s.list_mailboxes(), epoch=7)
    assert ms.recorded_epoch(account_dir) == 7


def test_bulk_flags_and_infos(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(MSG, frozenset({"\\Seen"}) if i % 2 else frozenset()) for i in range(10)])
        a = await store.select("INBOX")
        b = await store.select("INBOX")
        await b.store([3], "add", frozenset({"\\Deleted"}))
        await b.expunge()
        await store.append("INBOX", [AppendRequest(MSG)])
        uids = list(a.uids())
        assert a.flags_many(uids) == [a.info(u).flags for u in uids]  # 3 is a ghost here
        assert a.infos(uids) == [a.info(u) for u in uids]
        await a.refresh()
        uids = list(a.uids())
        assert len(uids) == 10 and 3 not in uids
        assert a.flags_many(uids) == [a.flags(u) for u in uids]
        assert a.infos(uids[::-1]) == [a.info(u) for u in uids[::-1]]
        with pytest.raises(KeyError):
            b.infos([11, 12])

    with_account(account_dir, body)


def test_account_change_stream_and_deleted_mailbox(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.create_mailbox("Lists")
        seen: list[str] = []

        async def listen() -> None:
            async for name in store.changes():
                seen.append(name)
                if len(seen) == 2:
                    return

        task = asyncio.create_task(listen())
        await asyncio.sleep(0)
        await store.append("Lists", [AppendRequest(MSG)])
        view = await store.select("Lists")
        idle = asyncio.create_task(view.wait_for_change(5.0))
        await asyncio.sleep(0)
        await store.delete_mailbox("Lists")
        await asyncio.wait_for(task, 5.0)
        assert seen == ["Lists", "Lists"]
        assert await idle is True
        with pytest.raises(NoSuchMailbox):
            await view.refresh()
        with pytest.raises(NoSuchMailbox):
            await view.read(1)

    with_account(account_dir, body)


def test_keyword_limit(account_dir: Path) -> None:
    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(MSG)])
        v = await store.select("INBOX")
        await v.store([1], "add", frozenset(f"k{i}" for i in range(59)))
        assert len(v.info(1).flags) == 59
        with pytest.raises(StorageError):
            await v.store([1], "add", frozenset({"one-too-many"}))
        assert len(v.info(1).flags) == 59
        await v.store([1], "remove", frozenset({"k0", "unknown"}))
        assert "k0" not in v.info(1).flags

    with_account(account_dir, body)
    flags = with_account(account_dir, lambda s: _flags_of(s, 1), epoch=2)
    assert len(flags) == 58


async def _flags_of(store: FileAccountStore, uid: int) -> frozenset[str]:
    v = await store.select("INBOX")
    return v.info(uid).flags


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_write_failure_fails_the_batch_and_changes_nothing(account_dir: Path) -> None:
    """A write the file system refuses (here: past RLIMIT_FSIZE, EFBIG, as a
    full disk would) answers StorageError and applies nothing; its partial
    bytes stay past the file's seal, never read, and the next write goes to a
    new file of the same owner."""
    import resource

    from .layout import chain

    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(MSG)])
        v = await store.select("INBOX")
        (data,) = chain(account_dir)
        size = data.stat().st_size
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 50, hard))
        try:
            with pytest.raises(StorageError):
                await store.append("INBOX", [AppendRequest(MSG * 20)])
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old_handler)
        assert data.stat().st_size == size + 50  # the torn bytes of the failed write
        assert list(v.uids()) == [1] and (await v.refresh()).added == []
        assert await store.append("INBOX", [AppendRequest(MSG)]) == [3]
        assert [p.name for p in chain(account_dir)] == ["log.1.1", "log.1.2"]
        assert (await v.refresh()).added == [3]
        assert await v.read(3) == MSG.replace(b"\n", b"\r\n")

    with_account(account_dir, body)
    got = with_account(account_dir, lambda s: s.status("INBOX"), epoch=2)
    assert got.messages == 2


def test_one_batch_behaves_like_its_operations_in_order(account_dir: Path) -> None:
    """Operations queued together share one write, but each sees the effects
    of the ones queued before it (flags, UNCHANGEDSINCE, expunge)."""

    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(MSG)] * 4)
        v = await store.select("INBOX")
        base = v.info(1).modseq
        r1, r2, r3, r4, gone, r5 = await asyncio.gather(
            v.store([1, 2], "add", frozenset({"\\Seen"})),
            v.store([1], "remove", frozenset({"\\Seen"})),
            v.store([2], "add", frozenset({"\\Flagged"}), unchanged_since=base),  # 2 changed just before
            v.store([3], "add", frozenset({"\\Deleted"})),
            v.expunge([3, 4]),
            v.store([3], "add", frozenset({"$Late"})),  # already expunged in this batch
        )
        assert r1.modified == [1, 2] and r2.modified == [1]
        assert r3.failed_unchangedsince == [2] and r3.modified == []
        assert r4.modified == [3] and gone == [3] and r5.modified == []
        assert v.info(1).flags == frozenset() and v.info(2).flags == {"\\Seen"}
        assert list(v.uids()) == [1, 2, 4]
        assert v.info(1).modseq > v.info(2).modseq > base

    with_account(account_dir, body)
    got = with_account(account_dir, lambda s: s.status("INBOX"), epoch=2)
    assert (got.messages, got.unseen) == (3, 2)


def test_batch_of_many_records_written_whole(account_dir: Path) -> None:
    # one write of more buffers than one pwritev call takes
    msgs = [b"Subject: %d\r\n\r\n%s\r\n" % (i, b"z" * (i % 50)) for i in range(700)]

    async def body(store: FileAccountStore) -> None:
        assert await store.append("INBOX", [AppendRequest(m) for m in msgs]) == list(range(1, 701))

    with_account(account_dir, body)

    async def check(store: FileAccountStore) -> list[bytes]:
        v = await store.select("INBOX")
        return [await v.read(u) for u in v.uids()]

    assert with_account(account_dir, check, epoch=2) == msgs


def test_header_search_reads_only_the_header(account_dir: Path) -> None:
    big = b"Subject: plain\r\nX-Tag: alpha\r\n\r\n" + b"Subject: needle\r\nX-Tag: needle\r\n" * 20000

    async def body(store: FileAccountStore) -> None:
        await store.append("INBOX", [AppendRequest(big), AppendRequest(b"Subject: a needle here\r\n\r\nx\r\n")])
        v = await store.select("INBOX")
        assert await v.search_text([1, 2], "subject", "NEEDLE") == [2]
        assert await v.search_text([1, 2], "x-tag", "needle") == []
        assert await v.search_text([1, 2], "x-tag", "alpha") == [1]
        assert await v.search_text([1, 2], "BODY", "x-tag: needle") == [1]
        v.close()

    with_account(account_dir, body)


def test_every_file_of_an_account_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Claims, manifests, log files, checkpoints and their directories are
    0600 / 0700 even under umask 000 (mail is readable by no other user)."""
    import stat

    acct = tmp_path / "acct"
    old = os.umask(0)
    try:
        async def body(store: FileAccountStore) -> None:
            await store.create_mailbox("Work/Deep")
            await store.append("INBOX", [AppendRequest(MSG)] * 3)
            v = await store.select("INBOX")
            await v.store([1], "add", frozenset({"\\Deleted"}))
            await v.expunge()
            await store.compact("INBOX")
            await store.put_meta("sieve", b"keep;")

        with_account(acct, body)
        with_account(acct, lambda s: s.append("Work/Deep", [AppendRequest(MSG)]), epoch=2)
    finally:
        os.umask(old)
    for path in [acct, *acct.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
