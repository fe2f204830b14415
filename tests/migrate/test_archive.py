"""Account archives through the real storage engine: export, restore into
another account, the same mailboxes, messages, flags, keywords, internal
dates, subscriptions and Sieve scripts; UIDs kept when they were 1..n; a
second restore adds nothing; the archive is a Maildir that the Maildir
importer reads on its own; hostile archives are refused."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dynamail.migrate import import_into
from dynamail.migrate.archive import (
    MANIFEST,
    ArchiveError,
    export_account,
    is_archive,
    restore_account,
)
from dynamail.sieve.scripts import ScriptStore, blobs_of
from dynamail.storage import FileAccountStore, FileMailStore
from dynamail.storage.api import AppendRequest

WHEN = datetime.datetime(2025, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
SCRIPT = 'require "fileinto";\nif header :contains "subject" "work" { fileinto "Work/Projects"; }\n'


def msg(i: int, mailbox: str) -> bytes:
    return (f"From: a{i}@example.test\r\nTo: x@example.test\r\nSubject: {mailbox} {i}\r\n"
            f"Message-ID: <{i}.{mailbox.replace('/', '.')}@example.test>\r\n\r\nbody {i}\r\n").encode()


async def fill(store: FileAccountStore) -> None:
    await store.create_mailbox("Sent", "\\Sent")
    await store.create_mailbox("Work")
    await store.create_mailbox("Work/Projects")
    await store.create_mailbox("Entwürfe")
    await store.subscribe("Work/Projects", True)
    for mailbox, count in (("INBOX", 12), ("Sent", 3), ("Work/Projects", 5), ("Entwürfe", 1)):
        reqs = []
        for i in range(count):
            flags = {"\\Seen"} if i % 2 else set()
            if i % 3 == 0:
                flags |= {"\\Flagged", "$Label1"}
            if i % 4 == 0:
                flags |= {"\\Answered", "project-x"}
            reqs.append(AppendRequest(msg(i, mailbox), frozenset(flags), WHEN + datetime.timedelta(minutes=i)))
        await store.append(mailbox, reqs)
    # a gap in INBOX's UIDs: expunge UID 2
    view = await store.select("INBOX")
    await view.store([2], "add", frozenset({"\\Deleted"}))
    await view.expunge([2])
    view.close()
    scripts = ScriptStore(blobs_of(store))
    await scripts.put("main", SCRIPT)
    await scripts.activate("main")


async def contents(store: FileAccountStore) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for listing in await store.list_mailboxes():
        view = await store.select(listing.name, read_only=True)
        rows = []
        for uid in view.uids():
            info = view.info(uid)
            rows.append((uid, info.internal_date, await view.read(uid), info.flags))
        view.close()
        out[listing.name] = {"special_use": listing.special_use, "subscribed": listing.subscribed, "rows": rows}
    return out


def strip_uids(c: dict[str, Any]) -> dict[str, Any]:
    return {name: {**mb, "rows": [r[1:] for r in mb["rows"]]} for name, mb in c.items()}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _open(path: Path) -> FileAccountStore:
    return await FileMailStore().open_account(path, 1)


def test_export_restore_round_trip(tmp_path: Path) -> None:
    archive = tmp_path / "alice.tar.gz"

    async def main() -> None:
        src = await _open(tmp_path / "src")
        dst = await _open(tmp_path / "dst")
        try:
            await fill(src)
            report = await export_account(src, archive, account="alice@a.test",
                                          settings={"RealName": "Alice"}, sieve=ScriptStore(blobs_of(src)))
            assert report.messages == 20 and report.mailboxes == 5 and report.sieve_scripts == 1
            assert is_archive(archive)
            restored = await restore_account(dst, archive, tmp_path / "work", account="alice@b.test",
                                             ledger_path=tmp_path / "ledger", sieve=ScriptStore(blobs_of(dst)))
            assert restored.imported == 20 and restored.skipped == 0, restored.problems
            assert restored.settings == {"RealName": "Alice"}
            before, after = await contents(src), await contents(dst)
            assert strip_uids(after) == strip_uids(before)
            # UIDs: kept where they were 1..n; INBOX had a gap, so only its order is kept
            for name in ("Sent", "Work/Projects", "Entwürfe"):
                assert [r[0] for r in after[name]["rows"]] == [r[0] for r in before[name]["rows"]]
            assert [r[0] for r in before["INBOX"]["rows"]][:3] == [1, 3, 4]
            assert [r[0] for r in after["INBOX"]["rows"]][:3] == [1, 2, 3]
            scripts = ScriptStore(blobs_of(dst))
            assert await scripts.active() == ("main", SCRIPT)
            again = await restore_account(dst, archive, tmp_path / "work", account="alice@b.test",
                                          ledger_path=tmp_path / "ledger", sieve=scripts)
            assert again.imported == 0 and again.duplicates == 20
            assert strip_uids(await contents(dst)) == strip_uids(before)
        finally:
            await src.close()
            await dst.close()

    run(main())
    assert not (tmp_path / "work").exists()


def test_archive_is_a_maildir_other_software_reads(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"

    async def main() -> None:
        src = await _open(tmp_path / "src")
        other = await _open(tmp_path / "other")
        try:
            await fill(src)
            await export_account(src, archive, account="a@a.test", settings={})
            with tarfile.open(archive) as tar:
                names = tar.getnames()
                manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
                tar.extractall(tmp_path / "x", filter="data")
            assert "Maildir/dovecot-uidlist" in names and "Maildir/.Work.Projects/dovecot-keywords" in names
            assert any(n.startswith("Maildir/.Entw&APw-rfe/cur/") for n in names)
            assert {m["name"] for m in manifest["mailboxes"]} == {"INBOX", "Sent", "Work", "Work/Projects",
                                                                  "Entwürfe"}
            # the plain Maildir importer (as for mail from another server) gets the same mail
            await import_into(other, str(tmp_path / "x" / "Maildir"), "maildir")
            assert strip_uids(await contents(other))["Work/Projects"]["rows"] == \
                strip_uids(await contents(src))["Work/Projects"]["rows"]
        finally:
            await src.close()
            await other.close()

    run(main())


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


@pytest.mark.parametrize("bad", ["traversal", "symlink", "absolute", "foreign", "no-manifest", "version"])
def test_hostile_archives_are_refused(tmp_path: Path, bad: str) -> None:
    manifest = json.dumps({"format": "dynamail-account-archive", "version": 1, "mailboxes": []}).encode()
    members = [(tarfile.TarInfo(MANIFEST), manifest)]
    if bad == "traversal":
        members.append((tarfile.TarInfo("Maildir/../../evil"), b"x"))
    elif bad == "symlink":
        link = tarfile.TarInfo("Maildir/cur/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        members.append((link, b""))
    elif bad == "absolute":
        members.append((tarfile.TarInfo("/tmp/evil"), b"x"))
    elif bad == "foreign":
        members.append((tarfile.TarInfo("etc/cron.d/x"), b"x"))
    elif bad == "no-manifest":
        members = [(tarfile.TarInfo("Maildir/cur/1"), b"x")]
    elif bad == "version":
        members = [(tarfile.TarInfo(MANIFEST), manifest.replace(b'"version": 1', b'"version": 99'))]
    archive = tmp_path / "bad.tar.gz"
    _tar(archive, members)

    async def main() -> None:
        dst = await _open(tmp_path / "dst")
        try:
            with pytest.raises(ArchiveError):
                await restore_account(dst, archive, tmp_path / "work", account="a@b.test", ledger_path=None)
            assert [m.name for m in await dst.list_mailboxes()] == ["INBOX"]
        finally:
            await dst.close()

    run(main())
    assert not (tmp_path / "work").exists() and not (tmp_path / "evil").exists()
