"""A portable archive of one account: export and restore.

The archive is a gzip-compressed tar file that other mail software can read
without dynamail::

    dynamail-account.json        manifest: format, version, account, time,
                                 mailboxes (name, folder, special use,
                                 subscribed, UIDVALIDITY, UIDNEXT, count),
                                 the account's own settings, Sieve scripts
    Maildir/                     Maildir++ as Dovecot writes it: INBOX is the
      cur/<time>.M<uid>.dynamail:2,<flags>   root, mailbox A/B is ``.A.B``
      dovecot-uidlist            (modified UTF-7 components); a file's
      dovecot-keywords           modification time is the internal date,
      .A.B/cur/...               ``dovecot-uidlist`` keeps UIDVALIDITY, UIDs
                                 and order, ``dovecot-keywords`` names up to
                                 26 keywords (letters a-z in the file names)
    sieve/<n>.sieve              each Sieve script (names in the manifest)

Export reads only through the storage interface (``storage/api.py``): each
mailbox is exported from one read-only view, a snapshot taken when the
mailbox is selected, so a mailbox in use by sessions is exported as it was
at that moment (messages that arrive later are in the next export; a
message expunged while the export runs is still read from the snapshot, or
counted as vanished if it cannot be).  Restore extracts the archive (links,
devices and paths outside the archive refused) and imports the Maildir with
the Maildir importer (``migrate.importer``): the same order, flags, keywords
and internal dates, and its ledger, so a restore run twice adds nothing the
second time.  UIDs: appends get the next UIDs of the target mailbox, so a
restore into new mailboxes keeps the UIDs exactly when the exported UIDs
were 1..n without gaps; UIDVALIDITY is new (RFC 9051 2.3.1.1 lets clients
resynchronise).  Keywords beyond 26 per mailbox are not kept (the
Maildir++ naming has 26 letters); the report counts them.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import shutil
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynamail.filemodes import open_private
from dynamail.imap import utf7
from dynamail.migrate.importer import import_into
from dynamail.storage.api import AccountStore, MailboxView, StorageError

FORMAT = "dynamail-account-archive"
VERSION = 1
MANIFEST = "dynamail-account.json"
MAILDIR = "Maildir"
SIEVE_DIR = "sieve"
MAX_MANIFEST = 64 * 1024 * 1024  # bytes: a manifest lists mailboxes, never messages
MAX_MEMBER = 256 * 1024 * 1024  # bytes in one archive member (a message or a script)
BATCH_BYTES = 8 * 1024 * 1024  # messages read before one write to the archive
MAILDIR_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}


class ArchiveError(Exception):
    """The archive is not one this version can restore (the message says why)."""


@dataclass
class ExportReport:
    account: str
    mailboxes: int = 0
    messages: int = 0
    bytes: int = 0
    vanished: int = 0  # expunged under the export and no longer readable
    keywords_dropped: int = 0  # keyword beyond the 26 letters of a Maildir folder
    sieve_scripts: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestoreReport:
    account: str
    exported_from: str = ""
    exported_at: str = ""
    mailboxes: int = 0
    imported: int = 0
    duplicates: int = 0  # already restored by an earlier run
    skipped: int = 0
    sieve_scripts: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["settings"] = sorted(self.settings)
        return out


def folder_of(mailbox: str) -> str:
    """The Maildir++ folder of a mailbox, relative to the archive root."""
    if mailbox == "INBOX":
        return MAILDIR
    return f"{MAILDIR}/." + ".".join(utf7.encode(part) for part in mailbox.split("/"))


# ---------------------------------------------------------------- export
class _Writer:
    """The tar file being written; every call runs on a worker thread."""

    def __init__(self, path: Path) -> None:
        # an account's mail and settings: 0600 whatever the umask
        self._file = open_private(path, "wb")
        self.tar = tarfile.open(fileobj=self._file, mode="w:gz", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()

    def _dir(self, name: str) -> None:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
                self.tar.addfile(info)

    def add(self, name: str, data: bytes, mtime: float) -> None:
        if "/" in name:
            self._dir(name.rsplit("/", 1)[0])
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o600, int(mtime)
        self.tar.addfile(info, io.BytesIO(data))

    def add_many(self, items: list[tuple[str, bytes, float]]) -> None:
        for item in items:
            self.add(*item)

    def close(self) -> None:
        try:
            self.tar.close()
        finally:
            self._file.close()


def _letters(flags: frozenset[str], keywords: dict[str, str]) -> str:
    out = [MAILDIR_LETTERS[f] for f in flags if f in MAILDIR_LETTERS]
    out += [keywords[f] for f in flags if f in keywords]
    return "".join(sorted(out))


async def _export_mailbox(store: AccountStore, writer: _Writer, name: str, report: ExportReport) -> dict[str, Any]:
    view: MailboxView = await store.select(name, read_only=True)
    try:
        folder = folder_of(name)
        uids = list(view.uids())
        infos = {uid: view.info(uid) for uid in uids}
        keywords: dict[str, str] = {}
        for info in infos.values():
            for flag in sorted(info.flags):
                if flag.startswith("\\") or flag in keywords:
                    continue
                if len(keywords) < 26:
                    keywords[flag] = chr(ord("a") + len(keywords))
                else:
                    report.keywords_dropped += 1
        uidlist = [f"3 V{view.uidvalidity} N{view.uidnext()}"]
        batch: list[tuple[str, bytes, float]] = []
        pending = 0
        for uid in uids:
            info = infos[uid]
            try:
                data = await view.read(uid)
            except (StorageError, KeyError, OSError):
                report.vanished += 1
                continue
            when = info.internal_date.timestamp()
            base = f"{int(when)}.M{uid}.dynamail"
            uidlist.append(f"{uid} :{base}")
            batch.append((f"{folder}/cur/{base}:2,{_letters(info.flags, keywords)}", data, when))
            report.messages += 1
            report.bytes += len(data)
            pending += len(data)
            if pending >= BATCH_BYTES:
                await asyncio.to_thread(writer.add_many, batch)
                batch, pending = [], 0
        now = time.time()
        batch.append((f"{folder}/dovecot-uidlist", ("\n".join(uidlist) + "\n").encode(), now))
        kw_text = "".join(f"{ord(letter) - ord('a')} {kw}\n" for kw, letter in keywords.items())
        batch.append((f"{folder}/dovecot-keywords", kw_text.encode(), now))
        await asyncio.to_thread(writer.add_many, batch)
        await asyncio.to_thread(writer._dir, f"{folder}/new")
        return {"name": name, "folder": folder, "uidvalidity": view.uidvalidity, "uidnext": view.uidnext(),
                "messages": len(uids)}
    finally:
        view.close()


async def export_account(store: AccountStore, path: Path, *, account: str,
                         settings: dict[str, Any], sieve: Any = None) -> ExportReport:
    """Write the archive of the account open in ``store`` to ``path``.
    ``sieve`` is the account's script store (``sieve.scripts.ScriptStore``)
    or None."""
    report = ExportReport(account=account)
    writer = await asyncio.to_thread(_Writer, path)
    try:
        mailboxes = []
        for listing in await store.list_mailboxes():
            entry = await _export_mailbox(store, writer, listing.name, report)
            entry.update(special_use=listing.special_use, subscribed=listing.subscribed)
            mailboxes.append(entry)
            report.mailboxes += 1
        scripts: list[dict[str, Any]] = []
        if sieve is not None:
            for number, (name, active) in enumerate(await sieve.list()):
                text = await sieve.get(name)
                if text is None:
                    continue
                member = f"{SIEVE_DIR}/{number}.sieve"
                await asyncio.to_thread(writer.add, member, text.encode("utf-8"), time.time())
                scripts.append({"name": name, "active": bool(active), "file": member})
                report.sieve_scripts += 1
        manifest = {
            "format": FORMAT, "version": VERSION, "account": account,
            "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "mailboxes": mailboxes, "settings": settings, "sieve": scripts,
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        await asyncio.to_thread(writer.add, MANIFEST, data, time.time())
    finally:
        await asyncio.to_thread(writer.close)
    return report


# ---------------------------------------------------------------- restore
def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Only directories and regular files under the archive's own names."""
    out = []
    for m in tar.getmembers():
        name = m.name
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "" in parts[:-1] or "\0" in name:
            raise ArchiveError(f"refusing archive member {name!r}: path outside the archive")
        if parts[0] not in (MAILDIR, SIEVE_DIR, MANIFEST):
            raise ArchiveError(f"refusing archive member {name!r}: not part of an account archive")
        if not (m.isdir() or m.isfile()):
            raise ArchiveError(f"refusing archive member {name!r}: not a file or directory")
        if m.size > MAX_MEMBER:
            raise ArchiveError(f"refusing archive member {name!r}: larger than {MAX_MEMBER} bytes")
        out.append(m)
    return out


def _extract(archive: Path, workdir: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _safe_members(tar)
            if not any(m.name == MANIFEST for m in members):
                raise ArchiveError(f"not a dynamail account archive (no {MANIFEST})")
            tar.extractall(workdir, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"unreadable archive: {exc}") from None
    raw = (workdir / MANIFEST).read_bytes()
    if len(raw) > MAX_MANIFEST:
        raise ArchiveError("the manifest is too large")
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ArchiveError("the manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError("not a dynamail account archive")
    if manifest.get("version") != VERSION:
        raise ArchiveError(f"archive version {manifest.get('version')!r}; this server restores version {VERSION}")
    return manifest


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a file that looks like an account archive."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if m.name == MANIFEST:
                    return True
    except (tarfile.TarError, EOFError, OSError):
        return False
    return False


async def restore_account(store: AccountStore, archive: Path, workdir: Path, *, account: str,
                          ledger_path: Path | None, sieve: Any = None) -> RestoreReport:
    """Restore ``archive`` into the account open in ``store`` (mail, the
    mailboxes' special use and subscriptions, Sieve scripts).  The settings
    found are returned in the report for the caller to apply."""
    report = RestoreReport(account=account)
    workdir.mkdir(parents=True, exist_ok=False)
    try:
        manifest = await asyncio.to_thread(_extract, archive, workdir)
        report.exported_from = str(manifest.get("account", ""))
        report.exported_at = str(manifest.get("exported_at", ""))
        entries = [m for m in manifest.get("mailboxes", []) if isinstance(m, dict) and isinstance(m.get("name"), str)]
        known = {m.name for m in await store.list_mailboxes()}
        for entry in sorted(entries, key=lambda m: m["name"].count("/")):
            name = entry["name"]
            special = entry.get("special_use")
            if name not in known:
                try:
                    await store.create_mailbox(name, special if special in _SPECIAL_USE else None)
                except StorageError:
                    await store.create_mailbox(name)
                known.add(name)
        imported = await import_into(store, str(workdir / MAILDIR), "maildir", ledger_path=ledger_path)
        result = imported.as_json()
        report.imported = int(result.get("imported", 0))
        report.duplicates = int(result.get("duplicates", 0))
        report.skipped = int(result.get("skipped", 0))
        report.problems = list(result.get("problems", []))
        for entry in entries:
            if entry.get("subscribed"):
                await store.subscribe(entry["name"], True)
            report.mailboxes += 1
        if sieve is not None:
            active = None
            for script in manifest.get("sieve", []):
                if not isinstance(script, dict) or not isinstance(script.get("name"), str):
                    continue
                member = workdir / str(script.get("file", ""))
                if not member.is_file() or workdir not in member.resolve().parents:
                    continue
                text = (await asyncio.to_thread(member.read_bytes)).decode("utf-8", "replace")
                await sieve.put(script["name"], text)
                report.sieve_scripts += 1
                if script.get("active"):
                    active = script["name"]
            if active is not None:
                await sieve.activate(active)
        settings = manifest.get("settings")
        report.settings = dict(settings) if isinstance(settings, dict) else {}
        return report
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


_SPECIAL_USE = frozenset({"\\Sent", "\\Trash", "\\Drafts", "\\Junk", "\\Archive", "\\All", "\\Flagged"})
