"""The storage engine on a real GlusterFS volume, mounted twice with FUSE
as two backends would mount it.

Runs when the environment allows it (root, ``glusterd`` and the FUSE
client installed, ``/dev/fuse`` usable) and skips with the reason at the
first step that is not supported.  A private ``glusterd`` (its own working
directory, bound to 127.0.10.1:24007) serves a single-brick
volume under a temporary directory; the test mounts it twice, runs the
append / SIGKILL / reopen check of ``test_kill`` on it, checks that what
one client wrote is what the other reads after taking over the account,
that the old owner is fenced, and that the election's ``link()`` claim is
exclusive across clients; then it unmounts, deletes the volume and stops
glusterd.  About 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.storage.killing import run_iterations

from dynamail.cluster.election import ControllerRecord, ElectionStore
from dynamail.storage import AppendRequest, FencedError, FileMailStore, epochs_monotonic

pytestmark = [
    pytest.mark.xdist_group("glusterfs"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GlusterFS FUSE mounts need Linux"),
]

HOST = os.environ.get("DYNAMAIL_TEST_GLUSTER_HOST", "127.0.10.1")
# the client-side caches docs/deploying.md tells operators to switch off;
# without open-behind off, the fencing test below fails (GlusterFS 10.3)
VOLUME_OPTIONS = ("performance.write-behind", "performance.stat-prefetch", "performance.quick-read",
                  "performance.open-behind")
STEP_TIMEOUT = 30.0


@dataclass
class Gluster:
    work: Path
    sock: Path
    volume: str
    mounts: list[Path]
    glusterd: subprocess.Popen[bytes] | None = None
    brick: Path | None = None
    sockets_before: frozenset[str] = frozenset()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["gluster", f"--glusterd-sock={self.sock}", "--mode=script", *args],
                             capture_output=True, text=True, timeout=STEP_TIMEOUT)
        if check and res.returncode != 0:
            raise RuntimeError(f"gluster {' '.join(args)}: {(res.stdout + res.stderr).strip()}")
        return res


GLUSTERD_PORT = 24007  # brick processes fetch their volfile from this port: not configurable


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _log_tail(path: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return "(no log)"


def _wait(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _environment_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (glusterd and FUSE mounts)"
    for tool in ("glusterd", "gluster", "glusterfs"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian packages glusterfs-server, glusterfs-client)"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as exc:
        return f"/dev/fuse is not usable here: {exc.strerror or exc}"
    os.close(fd)
    return None


RUN_DIR = Path("/var/run/gluster")  # where glusterd puts brick sockets, whatever its run-directory


def _sockets() -> frozenset[str]:
    with contextlib.suppress(OSError):
        return frozenset(p.name for p in RUN_DIR.glob("*.socket"))
    return frozenset()


def _start(g: Gluster, port: int) -> None:
    g.sockets_before = _sockets()
    (g.work / "wd").mkdir()
    (g.work / "run").mkdir()
    vol = g.work / "glusterd.vol"
    vol.write_text(
        "volume management\n"
        "    type mgmt/glusterd\n"
        f"    option working-directory {g.work / 'wd'}\n"
        f"    option run-directory {g.work / 'run'}\n"
        f"    option glusterd-sockfile {g.sock}\n"
        "    option transport-type socket\n"
        f"    option transport.socket.bind-address {HOST}\n"
        f"    option transport.socket.listen-port {port}\n"
        "    option ping-timeout 0\n"
        "    option event-threads 1\n"
        "end-volume\n"
    )
    log = g.work / "glusterd.log"
    g.glusterd = subprocess.Popen(["glusterd", "-N", "-f", str(vol), "-l", str(log), "--log-level", "WARNING"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if not _wait(lambda: g.sock.exists() or g.glusterd.poll() is not None, STEP_TIMEOUT) or not g.sock.exists():
        pytest.skip(f"glusterd did not start here: {_log_tail(log)}")
    if not _wait(lambda: g.cli("volume", "list", check=False).returncode == 0, STEP_TIMEOUT):
        pytest.skip(f"glusterd does not answer: {_log_tail(log)}")
    g.brick = g.work / "brick"
    try:
        g.cli("volume", "create", g.volume, f"{HOST}:{g.brick}", "force")
        for option in VOLUME_OPTIONS:
            g.cli("volume", "set", g.volume, option, "off")
        g.cli("volume", "start", g.volume)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot create and start a volume here: {exc} {_log_tail(g.work / 'glusterd.log')}")
    for i, mnt in enumerate(g.mounts):
        mnt.mkdir()
        res = subprocess.run(
            ["glusterfs", f"--volfile-server={HOST}", f"--volfile-server-port={port}",
             f"--volfile-id={g.volume}", f"--log-file={g.work / f'mount{i}.log'}",
             str(mnt)],
            capture_output=True, text=True, timeout=STEP_TIMEOUT)
        if res.returncode != 0 or not _wait(lambda m=mnt: os.path.ismount(m), STEP_TIMEOUT):
            pytest.skip(f"FUSE mount of the volume failed here: {res.stderr.strip()} "
                        f"{_log_tail(g.work / f'mount{i}.log')}")


def _stop(g: Gluster) -> None:
    for mnt in g.mounts:
        if os.path.ismount(mnt):
            subprocess.run(["umount", str(mnt)], capture_output=True, timeout=STEP_TIMEOUT)
            if os.path.ismount(mnt):
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=STEP_TIMEOUT)
    if g.glusterd is not None and g.glusterd.poll() is None:
        g.cli("volume", "stop", g.volume, "force", check=False)
        g.cli("volume", "delete", g.volume, check=False)
        g.glusterd.send_signal(signal.SIGTERM)
        try:
            g.glusterd.wait(STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            g.glusterd.kill()
            g.glusterd.wait()
    if g.brick is not None:  # the brick process logs and listens outside our directory
        name = str(g.brick).strip("/").replace("/", "-")
        with contextlib.suppress(OSError):
            os.unlink(f"/var/log/glusterfs/bricks/{name}.log")
        for sock in _sockets() - g.sockets_before:
            with contextlib.suppress(OSError):
                (RUN_DIR / sock).unlink()
    if not os.environ.get("DYNAMAIL_KEEP_GLUSTER"):
        shutil.rmtree(g.work, ignore_errors=True)


@pytest.fixture(scope="module")
def gluster() -> Iterator[Gluster]:
    problem = _environment_problem()
    if problem:
        pytest.skip(problem)
    work = Path(tempfile.mkdtemp(prefix="dmgfs", dir="/tmp"))  # short: glusterd's socket path
    g = Gluster(work, work / "run" / "glusterd.socket", f"dmtest{os.getpid()}",
                [work / "mnt1", work / "mnt2"])
    try:
        if not _port_free(GLUSTERD_PORT):
            pytest.skip(f"{HOST}:{GLUSTERD_PORT} is in use (another glusterd?)")
        _start(g, GLUSTERD_PORT)
        yield g
    finally:
        _stop(g)


def test_sigkill_loses_no_acknowledged_message_on_glusterfs(gluster: Gluster) -> None:
    path = gluster.mounts[0] / "kill-acct"
    # a longer life for each child: fsync on a FUSE volume is far slower than on a local disk
    total = run_iterations(path, 15, seed=7, max_delay=0.4)
    assert total >= 15  # the children did get work acknowledged
    assert epochs_monotonic(path)


def test_new_owner_on_another_client_reads_everything_and_fences_the_old(gluster: Gluster) -> None:
    a_path = gluster.mounts[0] / "acct"
    b_path = gluster.mounts[1] / "acct"  # the same directory through the second client

    async def main() -> None:
        old = await FileMailStore().open_account(a_path, 1)
        sent = []
        for n in range(60):
            body = b"Subject: %d\r\n\r\n" % n + bytes([65 + n % 26]) * (n * 97 % 5000) + b"\r\n"
            flags = frozenset({"\\Seen"}) if n % 2 else frozenset()
            (uid,) = await old.append("INBOX", [AppendRequest(body, flags)])
            sent.append((uid, body, flags))
        new = await FileMailStore().open_account(b_path, 2)
        view = await new.select("INBOX")
        assert list(view.uids()) == [u for u, _, _ in sent]
        for uid, body, flags in sent:
            assert await view.read(uid) == body
            assert view.info(uid).flags == flags
        view.close()
        with pytest.raises(FencedError):
            await old.append("INBOX", [AppendRequest(b"Subject: stale\r\n\r\nx\r\n")])
        (uid,) = await new.append("INBOX", [AppendRequest(b"Subject: new owner\r\n\r\nx\r\n")])
        assert uid == sent[-1][0] + 1
        await new.close()
        with contextlib.suppress(Exception):
            await old.close()

    asyncio.run(main())
    assert epochs_monotonic(a_path)


def test_election_claim_is_exclusive_across_clients(gluster: Gluster) -> None:
    a = ElectionStore(gluster.mounts[0] / "shared")
    b = ElectionStore(gluster.mounts[1] / "shared")
    won = [a.claim(ControllerRecord(1, "b1", HOST, 7070)), b.claim(ControllerRecord(1, "b2", HOST, 7070))]
    assert won == [True, False]
    record = b.current()
    assert record is not None and (record.epoch, record.member) == (1, "b1")
    assert b.claim(ControllerRecord(2, "b2", HOST, 7070))
    assert a.exists(2) and a.highest_epoch() == 2


def test_paused_old_owner_on_glusterfs(gluster: Gluster) -> None:
    """The fencing matrix of test_fencing.py on the GlusterFS mount, at the
    point every change passes first (creating its own file or its manifest's
    temporary), and an append paused at its write."""
    from tests.storage.test_fencing import CHANGES, run_case

    base = gluster.mounts[0] / "matrix"
    base.mkdir()
    for change in sorted(CHANGES):
        points = ("create", "write") if change == "append" else ("create",)
        outcomes = {point: run_case(base, point, change) for point in points}
        assert "refused" in outcomes.values(), (change, outcomes)


def test_paused_old_settings_writer_on_glusterfs(gluster: Gluster) -> None:
    """The directory fencing matrix of tests/directory/test_fencing.py with
    the old writer on one GlusterFS client and the new writer and the
    readers on the other."""
    from tests.directory.test_fencing import CHANGES, expected, run_case

    from dynamail.storage import faults

    for i, change in enumerate(CHANGES):
        for j, point in enumerate(faults.DIRECTORY_POINTS):
            name = f"dir-{i}-{j}"
            (gluster.mounts[0] / name).mkdir()
            result = run_case(gluster.mounts[0] / name / "base", point, change,
                              other=gluster.mounts[1] / name / "base")
            assert result == expected(point, change), (change.name, point, result)
