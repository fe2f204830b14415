"""Starting a ``dynamail serve`` process for the benchmarks.

Shared by ``bench.imap``, ``bench.storm`` and ``bench.connections``: create
the accounts, start the server on a port offset, wait for its IMAP greeting
and stop it again on the way out.
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


def create_accounts(base: Path, domain: str, password: str, users: Iterable[str],
                    stored_hash: str | None = None, settings: str = "") -> None:
    """Create ``users`` under ``base``.  ``stored_hash`` (a hash of
    ``password`` in any supported format) is stored as it is instead of
    hashing the password once per account; ``settings`` is TOML for
    ``Settings/server.toml``."""
    from dynamail.directory import Directory

    d = Directory(base, main_domain=domain)
    for u in users:
        if stored_hash is None:
            d.create_account(domain, u, password=password)
        else:
            ref = d.create_account(domain, u)
            d.set_password_hash(ref, stored_hash)
    if settings:
        (base / "Settings").mkdir(parents=True, exist_ok=True)
        (base / "Settings" / "server.toml").write_text(f'main_domain = "{domain}"\n' + settings)


@contextlib.contextmanager
def serve(
    tmp: Path, *, host: str, domain: str, offset: int, env: dict[str, str] | None = None,
    start_timeout: float = 30, poll: float = 0.1, stop_timeout: float = 20,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run ``dynamail serve`` on ``tmp/dynamail`` and yield (process, IMAP
    port) once it greets."""
    base = tmp / "dynamail"
    log = open(tmp / "dynamail.log", "ab")
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


@contextlib.contextmanager
def dynamail_server(
    tmp: Path, *, host: str, domain: str, password: str, users: Iterable[str], offset: int,
    env: dict[str, str] | None = None, start_timeout: float = 30, poll: float = 0.1,
    stop_timeout: float = 20, stored_hash: str | None = None, settings: str = "",
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Create ``users`` (local parts) under ``tmp/dynamail``, run ``dynamail
    serve`` there and yield (process, IMAP port) once it greets."""
    create_accounts(tmp / "dynamail", domain, password, users, stored_hash, settings)
    with serve(tmp, host=host, domain=domain, offset=offset, env=env, start_timeout=start_timeout,
               poll=poll, stop_timeout=stop_timeout) as running:
        yield running
