"""`dynamail demo` as a new operator uses it: backends and a frontend come
up, every printed port accepts connections, every printed command works as
printed, a member that dies is reported as crashed and started again, and
Ctrl-C stops every member."""

from __future__ import annotations

import imaplib
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dynamail.cluster import launcher

pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.slow, pytest.mark.timeout(240)]

PREFIX = "127.0.29"
MEMBERS = 3  # two backends and a frontend


def free_offset() -> int:
    ports = [*launcher.PORT_NAMES.values(), launcher.CLUSTER_PORT]
    for _ in range(200):
        offset = random.randrange(20000, 50000)
        try:
            for i in range(1, MEMBERS + 1):
                for port in ports:
                    with socket.socket() as s:
                        s.bind((f"{PREFIX}.{i}", port + offset))
        except OSError:
            continue
        return offset
    raise RuntimeError("no free port offset")


class Output:
    """Everything the demo printed so far (the status line has no newline)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        self._lock = threading.Lock()
        assert proc.stdout is not None
        self._stream = proc.stdout
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            ch = self._stream.read(1)
            if not ch:
                return
            with self._lock:
                self.text += ch

    def wait_for(self, pattern: str, timeout: float = 90.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = re.search(pattern, self.text)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not printed; output:\n{self.text[-3000:]}")


def test_demo_whole_cluster_crash_restart_and_ctrl_c(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    offset = free_offset()
    env = {k: v for k, v in os.environ.items() if k != "DYNAMAIL_PROG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynamail", "demo", str(directory), "--prefix", PREFIX,
         "--port-offset", str(offset), "--backends", "2", "--frontends", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )
    out = Output(proc)
    pids: list[int] = []
    try:
        out.wait_for("Ctrl-C stops the cluster")
        data = json.loads((directory / "cluster.json").read_text())
        assert [m["role"] for m in data["members"]] == ["backend", "backend", "frontend"]
        pids = [m["pid"] for m in data["members"]]
        # every member's line lists every client port, and each accepts
        for m in data["members"]:
            line = out.wait_for(rf"  {m['name']} \({m['role']}\) {re.escape(m['host'])}:([^\n]*)").group(1)
            for name, port in m["ports"].items():
                label = {"submission": "submission", "managesieve": "ManageSieve"}.get(name, name.upper())
                assert f"{label} {port}" in line, (name, line)
                socket.create_connection((m["host"], port), timeout=10).close()
        # the shared domain is the default login domain: plain "bob" logs in
        bob = out.wait_for(r"bob@example.test\s+password (\S+)").group(1)
        front = data["members"][-1]
        with imaplib.IMAP4(front["host"], front["ports"]["imap"]) as m:
            assert m.login("bob", bob)[0] == "OK"
            assert m.select("INBOX")[0] == "OK"
        # the printed commands work as printed (from the directory the demo ran in)
        block = out.wait_for(r"Try \(from this directory\):\n((?:  .*\n)+)").group(1)
        commands = [c.strip().split("  (")[0].strip() for c in block.splitlines()]
        status, accounts, kill = commands
        done = subprocess.run(shlex.split(status), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "Controller:" in done.stdout, done
        done = subprocess.run(shlex.split(accounts), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "alice@example.test" in done.stdout, done
        assert "kill" in kill and kill.endswith(" b1")
        done = subprocess.run(shlex.split(kill), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done
        # the demo notices, says so, and starts b1 again
        out.wait_for(r"b1 crashed \(killed by SIGKILL\); restarting it")
        new_pid = int(out.wait_for(r"b1 restarted \(pid (\d+)\)").group(1))
        assert new_pid != pids[0] and launcher.alive(new_pid)
        pids.append(new_pid)
        launcher.wait_serving(directory, timeout=60)
        # Ctrl-C: every member stops and the demo exits cleanly
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        out.wait_for("cluster stopped.")
        assert "Traceback" not in out.text
        assert not any(launcher.alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in pids:
            if launcher.alive(p):
                os.kill(p, signal.SIGKILL)
