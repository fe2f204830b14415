"""Where an account's files are in the storage layout (``fence.py``,
``mailbox.py``): for tests that damage, cut or inspect them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynamail.storage import fence


def manifest(account: Path) -> dict[str, Any]:
    """The manifest of the highest epoch (the current or last owner's)."""
    epochs = fence.manifest_epochs(account)
    assert epochs, f"no manifest in {account}"
    return fence.read_manifest(account, epochs[-1])


def owner_epoch(account: Path) -> int:
    return fence.manifest_epochs(account)[-1]


def box(account: Path, name: str = "INBOX") -> dict[str, Any]:
    return manifest(account)["mailboxes"][name]  # type: ignore[no-any-return]


def mailbox_dir(account: Path, name: str = "INBOX") -> Path:
    return account / "mail" / str(box(account, name)["id"])


def chain(account: Path, name: str = "INBOX") -> list[Path]:
    d = mailbox_dir(account, name)
    return [d / e["name"] for e in box(account, name)["chain"]]


def last_log(account: Path, name: str = "INBOX") -> Path:
    return chain(account, name)[-1]


def index_file(account: Path, name: str = "INBOX") -> Path:
    return mailbox_dir(account, name) / f"index.{owner_epoch(account)}"


def files_of(account: Path) -> list[str]:
    """Every file under the account directory, relative, sorted."""
    return sorted(str(p.relative_to(account)) for p in account.rglob("*") if p.is_file())
