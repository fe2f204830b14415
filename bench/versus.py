"""dynamail against Dovecot, every comparison of docs/benchmarks.md "Logins and
the IMAP mix against Dovecot" in one command.

Usage: ``python -m bench.versus [--accounts 2000] [--users 100] [--duration 20]``
(as root, so that Dovecot can run).

Runs ``bench.storm`` (cold login storm: ``--accounts`` accounts through 100
clients; dynamail cold, dynamail restarted with the keyed verifiers, Dovecot
``{SHA512-CRYPT}``), ``bench.storm --failover`` (``--sessions`` IMAP sessions
of a killed backend logging in again through the survivors), ``bench.lmtp``
(SMTP and LMTP delivery against Dovecot's LMTP), then ``bench.imap`` with ``--users`` accounts at 10 and
50 clients, once with ``{PLAIN}`` and once with ``{SHA512-CRYPT}`` stored on
both servers.  The machine's load average is printed before and after each
part: on a shared machine, compare the ratios of one run, not absolute
figures across runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}; {os.cpu_count()} cores"


def part(title: str, args: list[str]) -> None:
    print(f"\n=== {title} ({load()})", flush=True)
    subprocess.run([sys.executable, "-m", *args], check=False)
    print(f"=== end of {title} ({load()})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=1000, help="IMAP sessions of the failover storm")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--messages", type=int, default=50)
    ap.add_argument("--duration", type=float, default=20.0)
    a = ap.parse_args()
    part("cold login storm", ["bench.storm", "--accounts", str(a.accounts), "--clients", "100"])
    part("failover storm", ["bench.storm", "--failover", "--accounts", str(a.sessions)])
    part("SMTP and LMTP delivery against Dovecot LMTP", ["bench.lmtp", "--messages", "3000"])
    for clients in (10, 50):
        for scheme in ("plain", "sha512-crypt"):
            part(f"IMAP mix, {clients} clients, {scheme}",
                 ["bench.imap", "--users", str(a.users), "--clients", str(clients), "--messages",
                  str(a.messages), "--duration", str(a.duration), "--scheme", scheme])


if __name__ == "__main__":
    main()
