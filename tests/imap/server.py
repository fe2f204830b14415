"""A real ``dynamail serve`` process on a 127.0.4.x address for client tests."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dynamail.directory import Directory

DOMAIN = "example.test"
PASSWORD = "secret-pw"


@dataclass
class RealServer:
    host: str
    offset: int
    base: Path
    proc: subprocess.Popen[bytes]

    @property
    def imap_port(self) -> int:
        return 143 + self.offset

    @property
    def imaps_port(self) -> int:
        return 993 + self.offset


def _free_offset(host: str) -> int:
    """An offset at which every standard port of the server is free on ``host``."""
    for _ in range(200):
        offset = random.randint(20000, 50000)
        ok = True
        for std in (25, 106, 110, 143, 465, 587, 993, 995, 7070, 8010, 9010):
            with socket.socket() as t:
                try:
                    t.bind((host, std + offset))
                except OSError:
                    ok = False
                    break
        if ok:
            return offset
    raise RuntimeError("no free port offset")


@contextlib.contextmanager
def real_server(base: Path, host: str, users: tuple[str, ...] = ("alice", "bob")) -> Iterator[RealServer]:
    directory = Directory(base, main_domain=DOMAIN)
    for u in users:
        directory.create_account(DOMAIN, u, password=PASSWORD)
    offset = _free_offset(host)
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynamail", "serve", "--base", str(base), "--listen", host,
         "--port-offset", str(offset), "--main-domain", DOMAIN, "--postmaster-password", "pm-pw",
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = RealServer(host, offset, base, proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError("server exited: " + (base / "server.log").read_text())
            try:
                with socket.create_connection((host, server.imap_port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start: " + (base / "server.log").read_text())
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
