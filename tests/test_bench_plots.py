"""The benchmark pictures: drawn from a real checker's figures, as PNG."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is installed with the dev extras")

from bench import plots, report

from dynamail.chaos.checker import unavailability
from dynamail.chaos.history import OK, UNKNOWN, Fault, Op

PNG = b"\x89PNG\r\n\x1a\n"


def campaign() -> dict[str, object]:
    faults = [Fault(1, "pause", ["b1"], start=10.0, healed=14.0, controller=True, affected=["a", "b"]),
              Fault(2, "kill", ["b2"], start=30.0, healed=31.0, affected=["a"])]
    ops = [Op(1, "append", "w", "b1", account="a", start=9.9, end=13.9, outcome=UNKNOWN),
           Op(2, "append", "w", "b3", account="a", start=14.0, end=14.2, outcome=OK),
           Op(3, "deliver", "w", "b3", account="b", start=11.0, end=11.6, outcome=OK),
           Op(4, "fetch", "w", "b1", account="a", start=30.5, end=31.2, outcome=OK)]
    return {"seed": 7, "unavailability": unavailability(ops, faults),
            "faults": {"list": [asdict(f) for f in faults]}}


def test_chaos_picture(tmp_path: Path) -> None:
    data = campaign()
    u = data["unavailability"]
    assert isinstance(u, dict) and u["held"] == 1 and u["count"] == 3
    out = plots.chaos(json.loads(json.dumps(data)), tmp_path / "chaos.png")
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5_000


def test_latency_picture(tmp_path: Path) -> None:
    out = plots.latencies({"title": "t", "unit": "s", "target": 3,
                           "series": {"runs": [1.2, 1.5, 1.9, 2.4]}}, tmp_path / "l.png")
    assert out.read_bytes()[:8] == PNG


def test_report_links_a_fresh_picture_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(report, "PICTURES", report.DOC.parent / "benchmarks-test-tmp")
    suite = report.Suite("x", "x", ("true",), ("true",), plot=("latencies", "x.json"))
    started = time.monotonic()
    assert report.draw(suite, started) is None  # nothing written by the suite
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.json").write_text(json.dumps({"series": {"runs": [1.0, 2.0]}}))
    try:
        pic = report.draw(suite, started - 1)
        assert pic is not None and pic.read_bytes()[:8] == PNG
    finally:
        for p in (report.DOC.parent / "benchmarks-test-tmp").glob("*"):
            p.unlink()
        (report.DOC.parent / "benchmarks-test-tmp").rmdir()
