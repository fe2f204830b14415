"""PNG plots of benchmark results (matplotlib, drawn without a display).

    python -m bench.plots chaos REPORT.json OUT.png       # a fault campaign's report
    python -m bench.plots latencies RESULT.json OUT.png   # {"title", "unit", "target", "series": {name: [values]}}

``./dev bench`` calls these after the suites that leave results in
``bench/results/`` and links the pictures from docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

KIND_COLOURS = {"kill": "tab:red", "kill-two": "tab:purple", "pause": "tab:blue",
                "storage-pause": "tab:green", "isolate": "tab:orange", "partition": "tab:brown",
                "slow-storage": "tab:olive", "clock-step": "tab:cyan", "full-fs": "tab:gray"}


def _ecdf(ax: Any, values: list[float], label: str, **kw: Any) -> None:
    if not values:
        return
    xs = sorted(values)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})", **kw)


def chaos(report: dict[str, Any], out: Path) -> Path:
    """Left: the distribution of unavailability over every (fault, account)
    pair, and without the pairs whose client was held by the faulted process.
    Right: each fault's unavailability windows on the campaign's time line."""
    u = report["unavailability"]
    faults = {f["id"]: f for f in report["faults"]["list"]}
    t0 = min((f["start"] for f in faults.values()), default=0.0)
    every: list[float] = []
    free: list[float] = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for n, pf in enumerate(u["per_fault"], 1):
        held = set(pf.get("held", []))
        f = faults.get(pf["fault"], {})
        start = f.get("start", t0) - t0
        colour = KIND_COLOURS.get(pf["kind"], "black")
        for j, (account, gap) in enumerate(sorted(pf["accounts"].items())):
            every.append(gap)
            if account not in held:
                free.append(gap)
            y = n + j / max(1, len(pf["accounts"])) * 0.8
            right.plot([start, start + gap], [y, y], color=colour, linewidth=2,
                       linestyle=":" if account in held else "-")
    _ecdf(left, every, "all pairs", color="tab:red")
    _ecdf(left, free, "client not held by the faulted process", color="tab:blue")
    left.axvline(3.0, color="gray", linestyle="--", linewidth=1, label="target 3 s")
    left.set_xlabel("unavailability (s): fault to first acknowledged operation")
    left.set_ylabel("fraction of (fault, account) pairs")
    left.set_ylim(0, 1.02)
    left.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    left.set_title(f"seed {report.get('seed')}: p50 {u['p50']:.2f} s, p99 {u['p99']:.2f} s, "
                   f"max {u['max']:.2f} s", fontsize=10)
    for kind, colour in KIND_COLOURS.items():
        if any(pf["kind"] == kind for pf in u["per_fault"]):
            right.plot([], [], color=colour, linewidth=2, label=kind)
    right.plot([], [], color="black", linestyle=":", label="client held by the faulted process")
    right.set_xlabel("campaign time (s)")
    right.set_ylabel("fault, in order (one line per affected account)")
    right.grid(alpha=0.3)
    right.legend(loc="upper left", fontsize=7)
    right.set_title("unavailability windows", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def latencies(result: dict[str, Any], out: Path) -> Path:
    """The distribution of each series of ``result["series"]`` (an ECDF)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in result["series"].items():
        _ecdf(ax, [float(v) for v in values], name)
    if result.get("target") is not None:
        ax.axvline(float(result["target"]), color="gray", linestyle="--", linewidth=1,
                   label=f"target {result['target']} {result.get('unit', '')}")
    ax.set_xlabel(f"{result.get('what', 'latency')} ({result.get('unit', 's')})")
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(result.get("title", ""), fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("chaos", "latencies"))
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    data = json.loads(args.source.read_text())
    print((chaos if args.kind == "chaos" else latencies)(data, args.out))


if __name__ == "__main__":
    main()
