"""The clock-step fault's libfaketime plumbing: the offset file and the
member's environment; with the library installed, a stepped process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynamail.chaos import clock, stepped


def test_offset_spec_and_step_rewrite_the_file_whole(tmp_path: Path) -> None:
    assert [clock.spec(x) for x in (0, 0.4, 312.2, -45.6)] == ["+0", "+0", "+312", "-46"]
    clock.step(tmp_path, -120)
    assert clock.offset_file(tmp_path).read_text() == "-120\n"
    clock.step(tmp_path, 0)
    assert clock.offset_file(tmp_path).read_text() == "+0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["clock"]


def test_environment_fakes_the_wall_clock_only(tmp_path: Path) -> None:
    env = dict(word.split("=", 1) for word in clock.environment("/lib/x.so", tmp_path))
    assert env["LD_PRELOAD"] == "/lib/x.so" and env["DONT_FAKE_MONOTONIC"] == "1"
    assert env["FAKETIME_TIMESTAMP_FILE"] == str(clock.offset_file(tmp_path))
    assert env["NO_FAKE_STAT"] == "1" and env["FAKETIME_FORCE_MONOTONIC_FIX"] == "0"


def test_a_process_under_libfaketime_sees_the_step_but_not_in_its_monotonic_clock(tmp_path: Path) -> None:
    lib = clock.library()
    if not lib:
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    clock.step(tmp_path, 3600)
    probe = "import time; print(time.time()); print(time.monotonic())"
    before_wall, before_mono = time.time(), time.monotonic()
    out = subprocess.run(["env", *clock.environment(lib, tmp_path), sys.executable, "-c", probe],
                         capture_output=True, text=True, check=True, timeout=20).stdout.split()
    after_wall, after_mono = time.time(), time.monotonic()
    wall, mono = float(out[0]), float(out[1])
    assert before_wall + 3000 < wall < after_wall + 4000  # stepped by an hour, not a second
    assert before_mono <= mono <= after_mono  # the monotonic clock is the machine's


def test_a_member_entry_under_libfaketime_sleeps_and_keeps_the_step(tmp_path: Path) -> None:
    lib = clock.library()
    if not lib:
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    clock.step(tmp_path, -600)
    (tmp_path / "member_probe.py").write_text("import time\ntime.sleep(0.01)\nprint(time.time())\n")
    before = time.time()
    out = subprocess.run(["env", *clock.environment(lib, tmp_path), *clock.entry(),
                          sys.executable, "-m", "member_probe"], capture_output=True, text=True, timeout=20,
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr  # time.sleep works in the member
    assert float(out.stdout) < before - 500  # and its wall clock is stepped back


def test_the_entry_sleep_refuses_a_negative_length() -> None:
    with pytest.raises(ValueError):
        stepped.sleep(-1)
    stepped.sleep(0)
