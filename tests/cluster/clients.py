"""Small clients shared by the cluster tests and the migrate cluster test:
the admin CLI protocol (log in with USER/PASS, send commands) and an IMAP
login retried while an account moves."""

from __future__ import annotations

import imaplib
import socket
import time
from collections.abc import Callable
from typing import Any


def admin_cli(member: dict[str, Any], admin: dict[str, str], *commands: str, timeout: float) -> list[str]:
    """Log in to ``member``'s admin CLI as ``admin`` and send ``commands``;
    return one reply line for each (the first data line of a ``200 data
    follow`` reply)."""
    with socket.create_connection((member["host"], member["ports"]["cli"]), timeout=timeout) as s:
        f = s.makefile("rwb")
        f.readline()
        out = []
        for c in (f"USER {admin['user']}", f"PASS {admin['password']}", *commands):
            f.write(c.encode() + b"\r\n")
            f.flush()
            line = f.readline().decode().rstrip()
            if line.startswith("200 data follow"):
                line = f.readline().decode().rstrip()
            out.append(line)
        return out[2:]


def count_when_available(
    connect: Callable[[], imaplib.IMAP4], account: str, member: str, readonly: bool = False
) -> int:
    """Log in with ``connect`` (retrying for 30 s while the account moves),
    select INBOX and return its message count."""
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = connect()
            typ, data = conn.select("INBOX", readonly=readonly)
            conn.logout()
            if typ == "OK":
                return int(data[0] or 0)
        except (imaplib.IMAP4.error, OSError, EOFError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{account} never became available on {member}")
        time.sleep(0.1)
