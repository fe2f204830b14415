"""The host install of docs/deploying.md, word by word.

The test builds the wheel, runs the documented shell block ("Installing on
a host") with its own values for the block's variables (a fresh directory
tree instead of /opt, /etc and /var/lib; a fresh service user; a loopback
address and a port offset), then starts the server exactly as the unit the
block wrote says (its User, Environment and ExecStart) as that user, from
``/``, and checks what an operator relies on: it serves, it runs as the
service user, the secrets it wrote are 0600 and the user's own, ``dynamail
admin --dir BASE`` works as the service user, and SIGTERM stops it cleanly.

It needs root (it creates a system user and files owned by it): CI runs as
root; elsewhere it skips.
"""

from __future__ import annotations

import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamail import __version__
from dynamail.server.config import DEFAULT_PORTS

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "deploying.md"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates a service user (CI runs as root)"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("setpriv") is None,
                       reason="useradd and setpriv (Debian packages passwd, util-linux) not installed"),
]


def documented_block() -> str:
    found = re.search(r"<!-- host-install -->\n```sh\n(.*?)\n```", DOC.read_text(), re.S)
    assert found, "docs/deploying.md lost its host-install block"
    return found.group(1)


def with_values(block: str, values: dict[str, str]) -> str:
    """The block with each NAME=... assignment line given our value (the
    rest of the block untouched)."""
    seen = set()
    out = []
    for line in block.splitlines():
        m = re.match(r"^([A-Z_]+)=", line)
        if m and m.group(1) in values:
            seen.add(m.group(1))
            line = f"{m.group(1)}={values[m.group(1)]}"
        out.append(line)
    assert seen == set(values), f"the block no longer sets {set(values) - seen}"
    return "\n".join(out) + "\n"


def free_address() -> tuple[str, int]:
    for _ in range(200):
        host = f"127.0.30.{random.randrange(2, 250)}"
        offset = random.randrange(20000, 50000)
        try:
            for port in DEFAULT_PORTS.values():
                with socket.socket() as s:
                    s.bind((host, port + offset))
        except OSError:
            continue
        return host, offset
    raise RuntimeError("no free address")


def host_environment() -> dict[str, str]:
    """This environment with the PATH of a plain host: the system python3,
    not a development virtual environment's or a version manager's."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = SYSTEM_PATH
    return env


@pytest.fixture
def tree() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="dynamail-host-", dir="/tmp"))
    root.chmod(0o755)  # the service user walks through it, as through / on a host
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def service_user() -> Iterator[str]:
    name = f"dmhost{random.randrange(10**6)}"
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


def unit_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            fields.setdefault(key.strip(), value.strip())
    return fields


def test_documented_host_install_serves_as_the_service_user(tree: Path, service_user: str) -> None:
    python3 = shutil.which("python3", path=SYSTEM_PATH)
    if python3 is None or subprocess.run([python3, "-c", "import ensurepip, venv"], capture_output=True).returncode:
        pytest.skip("no system python3 with venv (Debian package python3-venv)")
    version = subprocess.run([python3, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                             capture_output=True, text=True).stdout.strip()
    if version != "True":
        pytest.skip("the system python3 is older than 3.11")
    # the wheel, as ./dev dist builds it
    dist = tree / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("dynamail-*.whl"))
    host, offset = free_address()
    values = {
        "WHEEL": str(wheel), "PREFIX": str(tree / "opt/dynamail"), "ETC": str(tree / "etc/dynamail"),
        "BASE": str(tree / "var/lib/dynamail"), "UNIT_DIR": str(tree / "etc/systemd/system"),
        "SERVICE_USER": service_user, "LISTEN": host, "MAIN_DOMAIN": "host.install.test",
        "PORT_OFFSET": str(offset),
    }
    for d in ("opt", "etc/systemd/system", "var/lib"):  # what a host has already
        (tree / d).mkdir(parents=True, exist_ok=True)
        for p in [tree / d, *(tree / d).parents]:
            if p == tree:
                break
            p.chmod(0o755)
    script = with_values(documented_block(), values)
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tree, env=host_environment(),
                         capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    assert __version__ in ran.stdout  # step 1 printed `dynamail --version`

    unit = unit_fields((tree / "etc/systemd/system/dynamail.service").read_text())
    assert unit["User"] == service_user and unit["Group"] == service_user
    env_key, _, env_value = unit["Environment"].partition("=")
    assert env_key == "DYNAMAIL_CONFIG" and env_value == values["ETC"] + "/server.toml"
    argv = unit["ExecStart"].split()
    assert argv[0] == values["PREFIX"] + "/bin/dynamail" and argv[1:] == ["serve"]
    assert "--password" not in unit["ExecStart"]

    user = pwd.getpwnam(service_user)
    log = tree / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--",
             "env", "-i", f"PATH={SYSTEM_PATH}", f"{env_key}={env_value}", *argv],
            cwd="/", stdout=out, stderr=subprocess.STDOUT)
    base = Path(values["BASE"])
    try:
        deadline = time.monotonic() + 90
        while not (base / "admin.url").exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{user.pw_uid}\s", status, re.M), status
        # secrets and data: the service user's own; the password file 0600
        pw_file = base / "postmaster.password"
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        for path in [base, *base.rglob("*")]:
            assert path.lstat().st_uid == user.pw_uid, path
        socket.create_connection((host, DEFAULT_PORTS["imap"] + offset), timeout=10).close()
        admin = subprocess.run(
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--",
             "env", "-i", f"PATH={SYSTEM_PATH}", values["PREFIX"] + "/bin/dynamail", "admin", "--dir",
             str(base), "domain", "list"],
            cwd="/", capture_output=True, text=True, timeout=60)
        assert admin.returncode == 0, admin.stderr
        assert "host.install.test" in admin.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
