"""SMTP and LMTP delivery against Dovecot's LMTP, same run, same machine.

Usage: ``python -m bench.lmtp [--messages 2000] [--concurrency 20]
[--server-workers N]`` (as root, so that Dovecot can run).

Postfix's ``smtp-source`` delivers ``--messages`` messages of 4 KiB to one
account over ``--concurrency`` connections (``-d``: a connection per
message, as in ``bench/smtp.py``), in turn to

1. dynamail's SMTP port 25 (250 only after the copy is durable),
2. dynamail's LMTP port 24 (``-L``),
3. Dovecot 2.3's LMTP service (``-L``; Maildir, ``service_count = 0``,
   processes reused), twice: ``mail_fsync = always`` (its reply, like
   dynamail's, means the message is on disk) and Dovecot's default
   ``optimized``.

Reported: messages per second and server CPU (user + system of the whole
process tree) per message, with the load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.imap import cpu_seconds
from bench.server import dynamail_server

HOST = "127.0.4.40"
DOMAIN = "bench.test"

DOVECOT_LMTP = """\
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols = lmtp
listen = {host}
ssl = no
mail_location = maildir:{tmp}/mail/%n
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
default_internal_user = dovecot
default_login_user = dovenull
mail_fsync = {fsync}
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {tmp}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={tmp}/mail/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = {host}
    port = {port}
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 1
  process_limit = 100
}}
"""


def wait_tcp(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                if s.recv(64).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


@contextlib.contextmanager
def dovecot_lmtp(tmp: Path, port: int, fsync: str) -> Iterator[subprocess.Popen[bytes]]:
    root = tmp / f"dovecot-{fsync}"
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "passwd").write_text("a:{PLAIN}pw::::::\n")
    mail = pwd.getpwnam("mail")
    os.chown(root / "mail", mail.pw_uid, mail.pw_gid)
    os.chmod(tmp, 0o755)
    os.chmod(root, 0o755)
    conf = root / "dovecot.conf"
    conf.write_text(DOVECOT_LMTP.format(tmp=root, host=HOST, port=port, uid=mail.pw_uid, gid=mail.pw_gid,
                                        fsync=fsync))
    proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_tcp(HOST, port, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def source(port: int, n: int, c: int, lmtp: bool) -> tuple[float, int]:
    exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    args = [exe, "-d", "-s", str(c), "-m", str(n), "-l", "4096", "-f", "bench@outside.example",
            "-t", f"a@{DOMAIN}", "-M", "bench.example"]
    if lmtp:
        args.append("-L")
    t0 = time.perf_counter()
    run = subprocess.run([*args, f"{HOST}:{port}"], capture_output=True, text=True)
    return time.perf_counter() - t0, run.returncode


def measure(name: str, pid: int, port: int, n: int, c: int, lmtp: bool) -> dict[str, float]:
    source(port, min(200, n), c, lmtp)  # warm-up
    cpu0 = cpu_seconds(pid)
    elapsed, rc = source(port, n, c, lmtp)
    cpu = cpu_seconds(pid) - cpu0
    row = {"rate": n / elapsed, "cpu_ms": cpu / n * 1000, "rc": float(rc)}
    print(f"{name}: {n} messages in {elapsed:.1f} s = {row['rate']:.0f}/s, server CPU "
          f"{row['cpu_ms']:.2f} ms per message (smtp-source exit {rc}); load {os.getloadavg()[0]:.2f}",
          flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--server-workers", type=int, default=1,
                    help="dynamail's worker processes (serve --workers; 0 = one per core)")
    a = ap.parse_args()
    offset = random.randint(20000, 40000)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="lmtpbench") as t:
        tmp = Path(t)
        name = "dynamail" if a.server_workers == 1 else f"dynamail, {a.server_workers or 'per-core'} workers,"
        with dynamail_server(tmp, host=HOST, domain=DOMAIN, password="pw", users=["a"], offset=offset,
                             settings=f"workers = {a.server_workers}\n") as (proc, _):
            if a.server_workers != 1:
                time.sleep(3.0)  # the workers elect their Controller
            rows[f"{name} SMTP (25)"] = measure(f"{name} SMTP", proc.pid, 25 + offset, a.messages,
                                                a.concurrency, False)
            rows[f"{name} LMTP (24)"] = measure(f"{name} LMTP", proc.pid, 24 + offset, a.messages,
                                                a.concurrency, True)
        if os.path.exists("/usr/sbin/dovecot") and os.geteuid() == 0:
            for fsync in ("always", "optimized"):
                with dovecot_lmtp(tmp, offset + 1024, fsync) as dproc:
                    rows[f"Dovecot 2.3 LMTP, mail_fsync = {fsync}"] = measure(
                        f"dovecot LMTP ({fsync})", dproc.pid, offset + 1024, a.messages, a.concurrency, True)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n| server | messages/s | server CPU ms per message |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['rate']:.0f} | {r['cpu_ms']:.2f} |")


if __name__ == "__main__":
    main()
