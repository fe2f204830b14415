"""Fault points: slowing every point through DIR/slow, arming one."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamail.storage import faults


@pytest.fixture
def faults_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[float]]:
    slept: list[float] = []
    monkeypatch.setattr(faults, "_DIR", str(tmp_path))
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    return tmp_path, slept


def test_no_file_no_delay(faults_dir: tuple[Path, list[float]]) -> None:
    _, slept = faults_dir
    for name in faults.POINTS + faults.DIRECTORY_POINTS:
        faults.point(name)
    assert slept == []


def test_slow_delays_every_point_until_removed(faults_dir: tuple[Path, list[float]]) -> None:
    d, slept = faults_dir
    (d / "slow").write_text("0.125\n")
    faults.point("write")
    faults.point("dir-rename")
    assert slept == [0.125, 0.125]
    (d / "slow").unlink()
    faults.point("write")
    assert slept == [0.125, 0.125]


@pytest.mark.parametrize(("content", "expected"), [("garbage", []), ("0", []), ("-3", []),
                                                    ("", []), ("99", [faults.MAX_SLOW])])
def test_a_bad_or_huge_delay(faults_dir: tuple[Path, list[float]], content: str,
                             expected: list[float]) -> None:
    d, slept = faults_dir
    (d / "slow").write_text(content)
    faults.point("link")
    assert slept == expected


def test_slow_and_an_arm_for_another_point_keep_the_arm(faults_dir: tuple[Path, list[float]]) -> None:
    d, slept = faults_dir
    (d / "slow").write_text("0.05")
    (d / "arm").write_text("unlink")
    faults.point("write")  # slowed, but not the armed point: no SIGSTOP, the arm stays
    assert slept == [0.05] and (d / "arm").read_text() == "unlink"
