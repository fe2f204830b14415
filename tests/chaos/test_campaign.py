"""The short form of the fault campaign (docs/chaos.md): a fixed seed for
two minutes against a real three-backend cluster, through the command line
an operator uses.  It must find no violation; on failure the message holds
the command that reproduces the run and the report's violations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.xdist_group("chaos"), pytest.mark.slow, pytest.mark.timeout(900)]

SEED = 11
DURATION = 120


def test_short_campaign_finds_no_violation(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "dynamail", "chaos", "--seed", str(SEED), "--duration", str(DURATION),
         "--dir", str(directory)],
        capture_output=True, text=True, timeout=840,
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 2: the campaign could not run
    report = json.loads((directory / "report.json").read_text())
    assert report["faults"]["injected"] >= 5, report["faults"]
    assert report["operations"]["deliver"]["ok"] > 0 and report["operations"]["append"]["ok"] > 0
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert report["ok"] and not report["violations"]
