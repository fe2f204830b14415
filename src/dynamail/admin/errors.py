"""The one error type of administrative operations."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from dynamail.directory import model
from dynamail.directory.files import CorruptFile
from dynamail.names import BadName

log = logging.getLogger("dynamail.admin")

CODES = ("not_found", "exists", "forbidden", "bad_request", "unavailable", "not_cluster")


class AdminError(Exception):
    """``code`` is one of CODES; ``str(exc)`` is a message for the client.

    The CLI protocol answers ``5xx <message>``, the JSON API maps the code to
    an HTTP status (404, 409, 403, 400, 503, 501)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@contextmanager
def translated() -> Iterator[None]:
    """Turn directory and storage errors into AdminError."""
    from dynamail.cluster.locator import AccountUnavailable
    from dynamail.storage.api import MailboxExists, NoSuchMailbox, StorageError

    try:
        yield
    except AdminError:
        raise
    except (model.NoSuchDomain, model.NoSuchAccount, NoSuchMailbox) as exc:
        raise AdminError("not_found", str(exc) or "not found") from exc
    except (model.AlreadyExists, MailboxExists) as exc:
        raise AdminError("exists", str(exc) or "already exists") from exc
    except (BadName, model.BadSetting, model.NotEmpty, model.LimitReached) as exc:
        raise AdminError("bad_request", str(exc)) from exc
    except model.Superseded as exc:
        raise AdminError("unavailable", "the controller changed during the operation; try again") from exc
    except CorruptFile as exc:
        raise AdminError("unavailable", "a settings file is unreadable") from exc
    except StorageError as exc:
        raise AdminError("unavailable", str(exc) or "storage failure") from exc
    except AccountUnavailable as exc:
        raise AdminError("unavailable", str(exc) or "temporarily unavailable") from exc
    except OSError as exc:
        # the file system refused a settings write (full, quota, I/O error,
        # read-only, a stale NFS handle): a temporary failure, not a bug
        log.warning("settings write failed: %s", exc)
        raise AdminError("unavailable", f"storage failure: {exc.strerror or exc}") from exc
