"""kill -9 of a process in the middle of a stream of settings updates leaves
every settings file parseable, and a fresh Directory reads them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dynamail.directory import Directory

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from argon2 import PasswordHasher
    from dynamail.directory import Directory
    d = Directory(Path(sys.argv[1]), main_domain="main.example",
                  password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    if not d.domain_exists("s.example"):
        d.create_domain("s.example", shared=True)
    i = 0
    while True:
        name = f"a{i % 7}"
        ref = d.find_account(f"{name}@s.example") or d.create_account("s.example", name)
        d.update_account_settings(ref, {"RealName": "x" * (i % 500), "X-Counter": i})
        d.update_domain_settings("s.example", {"X-Counter": i, "X-Pad": "y" * (i % 300)})
        d.update_server_account_defaults({"X-Counter": i})
        d.update_cluster_account_defaults({"X-Counter": i})
        d.post_alert("server", f"alert {i}")
        d.update_account_prefs(ref, {"X-Counter": i})
        if i % 5 == 0:
            d.set_password(ref, f"pw{i}")
        if i % 11 == 0:
            d.delete_account(ref)
        i += 1
        if i >= 20:
            print("running", flush=True)
    """
)


@pytest.mark.xdist_group("directory")
@pytest.mark.parametrize("rounds", [3])
def test_kill_during_updates(tmp_path: Path, rounds: int) -> None:
    base = tmp_path / "base"
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2] / "src"))
    for r in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(base)], stdout=subprocess.PIPE, env=env
        )
        assert proc.stdout is not None
        # Stop it at a different point of its stream each round.
        for _ in range(1 + r * 7):
            assert proc.stdout.readline() == b"running\n"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        checked = 0
        for path in base.rglob("*.json"):
            json.loads(path.read_bytes())  # every settings file is whole
            checked += 1
        assert checked >= 8
        d = Directory(base, main_domain="main.example")
        for name in d.list_accounts("s.example"):
            ref = d.find_account(f"{name}@s.example")
            assert ref is not None
            assert isinstance(d.effective_account_settings(ref), dict)
            assert isinstance(d.account_prefs(ref), dict)
        assert d.effective_domain_settings("s.example")["X-Counter"] >= 0
        assert d.alerts("server")
