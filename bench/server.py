"""Starting a ``dynamail serve`` process for the benchmarks.

Shared by ``bench.imap`` and ``bench.connections``: create the accounts,
start the server on a port offset, wait for its IMAP greeting and stop it
again on the way out.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 30,
              poll: float = 0.1) -> None:
    """Wait until ``host:port`` greets with ``* OK``; raise if ``proc`` exits
    first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                if s.recv(64).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(poll)
    raise RuntimeError("server did not start")


@contextlib.contextmanager
def dynamail_server(
    tmp: Path, *, host: str, domain: str, password: str, users: Iterable[str], offset: int,
    env: dict[str, str] | None = None, start_timeout: float = 30, poll: float = 0.1,
    stop_timeout: float = 20,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Create ``users`` (local parts) under ``tmp/dynamail``, run ``dynamail
    serve`` there and yield (process, IMAP port) once it greets."""
    from dynamail.directory import Directory

    base = tmp / "dynamail"
    d = Directory(base, main_domain=domain)
    for u in users:
        d.create_account(domain, u, password=password)
    log = open(tmp / "dynamail.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynamail", "serve", "--base", str(base), "--listen", host,
         "--port-offset", str(offset), "--main-domain", domain, "--postmaster-password", "x",
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        try:
            wait_port(host, 143 + offset, proc, start_timeout, poll)
        except RuntimeError:
            log.flush()
            print((tmp / "dynamail.log").read_text()[-3000:], file=sys.stderr)
            raise
        yield proc, 143 + offset
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
