"""Run every benchmark suite in ``bench/`` on the machine at hand and write
their output into docs/benchmarks.md (``./dev bench``).

    .venv/bin/python bench/report.py [--quick] [--only storage,smtp] [--no-write]

Each suite runs as its own process, one after the other (they measure the
machine; running two at once would measure each other), with a deadline.
The generated part of docs/benchmarks.md sits between two marker lines and
is replaced as a whole; the hand-written sections above it, which explain
the figures of earlier runs, stay as they are.  The generated part records
the machine (CPU, cores, load average before and after each suite, Python,
commit) because on a shared machine the load decides most figures.

``--quick`` runs shorter variants (fewer runs, smaller data), for checking
that every suite still works; its figures are not comparable with a full
run and the section says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- ./dev bench: generated from here on; edits below this line are overwritten -->"
END = "<!-- ./dev bench: end of generated part -->"
TAIL_LINES = 60  # lines of each suite's output kept in the document


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    what: str
    argv: tuple[str, ...]
    quick: tuple[str, ...]
    timeout: float = 1800.0
    # (bench/plots.py kind, result file the suite writes): drawn into docs/benchmarks/NAME.png
    plot: tuple[str, str] | None = None


RESULTS = ROOT / "bench" / "results"
PICTURES = DOC.parent / "benchmarks"


PY = (sys.executable,)


def _failover(name: str, what: str, runs: int, quick_runs: int) -> Suite:
    """A ``bench/cluster.py`` failover suite that leaves its distribution for a picture."""
    result = f"bench/results/{name}.json"
    argv = (*PY, "bench/cluster.py", name, "--json", result)
    return Suite(name, what, (*argv, "--runs", str(runs)), (*argv, "--runs", str(quick_runs)),
                 plot=("latencies", f"{name}.json"))


SUITES = (
    Suite("storage", "mailbox engine: appends vs the fsync limit, opens, fetches, compaction",
          (*PY, "bench/storage.py"), (*PY, "bench/storage.py", "--quick", "--no-write")),
    Suite("imap", "IMAP mix, dynamail against Dovecot (when installed) on the same machine",
          (*PY, "-m", "bench.imap"), (*PY, "-m", "bench.imap", "--clients", "10", "--duration", "5")),
    Suite("smtp", "SMTP deliveries against the fsync limit",
          (*PY, "bench/smtp.py"), (*PY, "bench/smtp.py", "-n", "300")),
    Suite("storm", "cold login storm (argon2), dynamail against Dovecot",
          (*PY, "-m", "bench.storm"), (*PY, "-m", "bench.storm", "--accounts", "200", "--clients", "20")),
    Suite("failover-storm", "1,000 IMAP sessions of a killed backend logging in again, with and without keyed verifiers",
          (*PY, "-m", "bench.storm", "--failover"), (*PY, "-m", "bench.storm", "--failover", "--accounts", "100")),
    Suite("lmtp", "SMTP and LMTP delivery against Dovecot's LMTP (smtp-source, 20 connections, 4 KiB)",
          (*PY, "-m", "bench.lmtp", "--messages", "3000"), (*PY, "-m", "bench.lmtp", "--messages", "300")),
    Suite("connections", "idle connections: memory and CPU per connection, wake-up latency",
          (*PY, "bench/connections.py"), (*PY, "bench/connections.py", "--connections", "1000",
                                          "--rounds", "5", "--idle-seconds", "3")),
    Suite("directory", "object model: creating and listing many accounts",
          (*PY, "bench/directory.py"), (*PY, "bench/directory.py", "--accounts", "5000")),
    Suite("cluster-links", "cluster link cost, plaintext against TLS",
          (*PY, "bench/cluster.py", "links"), (*PY, "bench/cluster.py", "links", "--runs", "50")),
    Suite("controller-scale", "Controller placement speed and memory per open account",
          (*PY, "bench/cluster.py", "controller"),
          (*PY, "bench/cluster.py", "controller", "--accounts", "100000")),
    *(_failover(name, what, full, quick) for name, what, full, quick in (
        ("failover", "backend failover: kill -9 of an account's owner to the next login", 20, 3),
        ("controller-failover", "Controller failover: kill -9 of the Controller to the next grant", 20, 3),
        ("failover-load", "backend kill -9 under load: unavailability per affected account", 50, 3),
        ("controller-failover-load", "Controller kill -9 under load: operations on the other members",
         5, 1),
    )),
    Suite("chaos", "unavailability under random faults with load (the fault campaign, seed 11)",
          (*PY, "-m", "dynamail", "chaos", "--seed", "11", "--duration", "300",
           "--report", "bench/results/chaos.json"),
          (*PY, "-m", "dynamail", "chaos", "--seed", "11", "--duration", "60",
           "--report", "bench/results/chaos.json"),
          plot=("chaos", "chaos.json")),
)


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        commit = "?"
    return [f"- CPU: {cpu}, {os.cpu_count()} logical cores; {platform.system()} {platform.release()}",
            f"- Python {platform.python_version()}; commit {commit or '?'}",
            f"- run started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def run(suite: Suite, quick: bool) -> tuple[list[str], list[str]]:
    """(table row, output section) of one suite."""
    argv = suite.quick if quick else suite.argv
    before = load()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=suite.timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        out, rc = proc.stdout + proc.stderr, str(proc.returncode)
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        out, rc = text, f"timeout after {suite.timeout:.0f} s"
    elapsed = time.monotonic() - t0
    picture = draw(suite, t0)
    shown = " ".join(a if a != sys.executable else "python" for a in argv)
    row = [f"| {suite.name} | {suite.what} | `{shown}` | {elapsed:.0f} s | {rc} | {before} → {load()} |"]
    lines = out.rstrip().splitlines()
    cut = len(lines) > TAIL_LINES
    section = [f"### {suite.name}", "", f"`{shown}` — exit {rc}, {elapsed:.0f} s"
               + (f" (last {TAIL_LINES} lines of output)" if cut else ""), "", "```",
               *lines[-TAIL_LINES:], "```", ""]
    if picture is not None:
        section += [f"![{suite.name}]({picture.relative_to(DOC.parent)})", ""]
    return row, section


def draw(suite: Suite, started: float) -> Path | None:
    """The suite's picture, when it left a result file in this run."""
    if suite.plot is None:
        return None
    kind, name = suite.plot
    source = RESULTS / name
    try:
        if source.stat().st_mtime < time.time() - (time.monotonic() - started):
            return None  # left by an earlier run
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from bench import plots

        data = json.loads(source.read_text())
        out = PICTURES / f"{suite.name}.png"
        return plots.chaos(data, out) if kind == "chaos" else plots.latencies(data, out)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        print(f"no picture for {suite.name}: {exc}", flush=True)
        return None


def render(rows: list[str], sections: list[str], quick: bool) -> str:
    head = ["## Latest run of every suite (`./dev bench`)", "",
            "Generated by `bench/report.py`; the sections above explain the figures of "
            "earlier, hand-checked runs." + (" **Quick run**: shorter variants that check "
                                             "the suites work; the figures are not comparable "
                                             "with a full run." if quick else ""), "",
            *machine(), "",
            "| suite | what | command | time | exit | load average (1/5/15 min) before → after |",
            "|---|---|---|---|---|---|", *rows, ""]
    return "\n".join([BEGIN, *head, *sections, END]) + "\n"


def write(doc: Path, generated: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        text = before + generated + after
    else:
        text = text.rstrip("\n") + "\n\n" + generated
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter variants (checks the suites run)")
    ap.add_argument("--only", default="", help="comma-separated suite names: "
                    + ", ".join(s.name for s in SUITES))
    ap.add_argument("--no-write", action="store_true", help="print, do not change docs/benchmarks.md")
    args = ap.parse_args()
    chosen = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = chosen - {s.name for s in SUITES}
    if unknown:
        ap.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    rows: list[str] = []
    sections: list[str] = []
    for suite in SUITES:
        if chosen and suite.name not in chosen:
            continue
        print(f"== {suite.name}: {suite.what}", flush=True)
        row, section = run(suite, args.quick)
        print(row[0], flush=True)
        rows += row
        sections += section
    generated = render(rows, sections, args.quick)
    if args.no_write:
        print(generated)
    else:
        write(DOC, generated)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
