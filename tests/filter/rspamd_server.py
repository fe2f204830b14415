"""A real Rspamd (Debian ``rspamd``) started by the tests on loopback, with
its own configuration: the distribution's rules, no hyperscan (fast start),
DNS pointed at a closed port (no network here), actions at 50 (reject) and
20 (add header), and one test rule: a Subject containing "spammy" scores 30."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
START_TIMEOUT = 240.0  # the first start on a machine compiles the pattern cache

CONFIG = """
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "error"; }}
worker "normal" {{
    bind_socket = "{host}:{port}";
    count = 1;
    .include "$CONFDIR/worker-normal.inc"
}}
"""
# compiled pattern databases are kept between runs: the first start compiles
# them (tens of seconds on a busy machine), later starts take seconds
HS_CACHE = Path(tempfile.gettempdir()) / "dynamail-test-rspamd-hs"
OPTIONS = """dns {{ nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }}
disable_hyperscan = true;
hs_cache_dir = "{hs}";
"""
ACTIONS = "reject = 50;\nadd_header = 20;\nrewrite_subject = null;\ngreylist = null;\n"
MULTIMAP = """TEST_SPAMMY_SUBJECT {{
  type = "header";
  header = "Subject";
  regexp = true;
  map = "file://{map}";
  score = 30.0;
}}
"""


def scan(url: str, message: bytes) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(url + "/checkv2", data=message, method="POST", headers={"IP": "127.0.0.1"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict = json.loads(resp.read())  # type: ignore[type-arg]
        return answer


class Rspamd:
    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.dir = workdir
        self.host = host
        with socket.socket() as probe:  # a port free now on this address
            probe.bind((host, 0))
            self.port = int(probe.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        local = self.dir / "local"
        (local / "local.d").mkdir(parents=True, exist_ok=True)
        (local / "override.d").mkdir(parents=True, exist_ok=True)
        (self.dir / "rspamd.conf").write_text(CONFIG.format(host=self.host, port=self.port))
        (local / "override.d" / "actions.conf").write_text(ACTIONS)
        HS_CACHE.mkdir(exist_ok=True)
        (local / "override.d" / "options.inc").write_text(OPTIONS.format(hs=HS_CACHE))
        (local / "spammy.map").write_text("/spammy/i\n")
        (local / "local.d" / "multimap.conf").write_text(MULTIMAP.format(map=local / "spammy.map"))
        cmd = [shutil.which("rspamd") or "rspamd", "-f", "-c", str(self.dir / "rspamd.conf")]
        if os.geteuid() == 0:
            cmd += ["-i", "-u", "root", "-g", "root"]
        cmd += [f"--var=DBDIR={self.dir}", f"--var=RUNDIR={self.dir}", f"--var=LOGDIR={self.dir}",
                f"--var=LOCAL_CONFDIR={local}"]
        out = open(self.dir / "stdout.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        gtube = f"From: a@b.example\r\nSubject: t\r\n\r\n{GTUBE}\r\n".encode()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if scan(self.url, gtube).get("action") == "reject":  # rules loaded
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"rspamd did not start: {(self.dir / 'stdout.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: main process and workers
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
            self.proc = None
