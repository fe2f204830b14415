"""Export and restore of one account (``migrate.archive``), run where the
account is open.

Both need the Master right (they read or replace all of an account's
mail).  They run on the account's owner: when another cluster member has
the account open, they raise :class:`OwnerElsewhere` naming it, and the
caller (the JSON API) sends the client there; otherwise this member opens
the account (the Controller grants it) and works on the same store the
account's sessions use, so the export is consistent while the account is in
use.  Archives are spooled in ``BASE/Backup/`` (a directory of this
member's own storage) and removed by the caller once sent or read.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from dynamail.admin.errors import AdminError, translated
from dynamail.directory import model

SPOOL = "Backup"
NOT_RESTORED = frozenset({"Password"})  # settings an archive never sets


class OwnerElsewhere(Exception):
    """Another member has the account open: ask it (``host``, its ports are
    the standard ports plus ``port_offset``)."""

    def __init__(self, member: str, host: str, port_offset: int) -> None:
        super().__init__(f"the account is open on member {member}")
        self.member = member
        self.host = host
        self.port_offset = port_offset


def spool_path(admin: Any, suffix: str) -> Path:
    """A new file name in this member's archive spool."""
    spool = Path(admin.directory.base) / SPOOL
    spool.mkdir(mode=0o700, exist_ok=True)
    return spool / f"{secrets.token_hex(8)}{suffix}"


async def _open(admin: Any, actor: Any, address: str) -> tuple[Any, Any]:
    ref = await admin._account(address, actor=actor)
    await admin._need(actor, model.MASTER)
    if admin.accounts is None:
        raise AdminError("unavailable", "mail storage is not available")
    return ref, admin.accounts.use(ref)


def _scripts(store: Any) -> Any:
    try:
        from dynamail.sieve.scripts import ScriptStore, blobs_of
    except ImportError:  # pragma: no cover - a build without Sieve
        return None
    return ScriptStore(blobs_of(store))


async def export_account(admin: Any, actor: Any, address: str, out: Path) -> dict[str, Any]:
    """Write the account's archive to ``out``; the export report."""
    from dynamail.cluster.locator import Local, Relay
    from dynamail.migrate.archive import export_account as export

    ref, use = await _open(admin, actor, address)
    settings = await admin.get_account_settings(actor, address)
    with translated():
        async with use as placement:
            if isinstance(placement, Relay):
                raise OwnerElsewhere(placement.member, placement.host, placement.port_offset)
            assert isinstance(placement, Local)
            report = await export(placement.store, out, account=ref.address, settings=settings,
                                  sieve=_scripts(placement.store))
    return report.as_json()


async def restore_account(admin: Any, actor: Any, address: str, archive: Path) -> dict[str, Any]:
    """Restore an archive into the account (which must exist); the report."""
    from dynamail.cluster.locator import Local, Relay
    from dynamail.migrate.archive import ArchiveError
    from dynamail.migrate.archive import restore_account as restore

    ref, use = await _open(admin, actor, address)
    ledger = admin.directory.account_mail_path(ref) / "restore.ledger"
    workdir = archive.with_suffix(".d")
    with translated():
        async with use as placement:
            if isinstance(placement, Relay):
                raise OwnerElsewhere(placement.member, placement.host, placement.port_offset)
            assert isinstance(placement, Local)
            try:
                report = await restore(placement.store, archive, workdir, account=ref.address,
                                       ledger_path=ledger, sieve=_scripts(placement.store))
            except ArchiveError as exc:
                raise AdminError("bad_request", str(exc)) from exc
    settings = {k: v for k, v in report.settings.items() if k not in NOT_RESTORED}
    if settings:
        await admin.update_account_settings(actor, address, settings)
    report.settings = settings
    return report.as_json()
