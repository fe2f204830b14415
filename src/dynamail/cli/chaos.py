"""`dynamail chaos`: the fault campaign (docs/chaos.md)."""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

import click

# dynamail.chaos.schedule.KIND_NAMES, kept here so that --help needs no import of the campaign
KIND_NAMES = ("kill", "kill-two", "pause", "storage-pause", "slow-storage", "clock-step", "isolate",
              "partition", "full-fs")


@click.command()
@click.option("--seed", type=int, default=None, help="Seed of the fault schedule and the clients "
              "(default: a random one, printed).")
@click.option("--duration", type=float, default=120.0, show_default=True,
              help="Seconds of load and faults.")
@click.option("--backends", default=3, show_default=True, type=click.IntRange(2, 20))
@click.option("--frontends", default=0, show_default=True, type=click.IntRange(0, 20))
@click.option("--shared-dir", "shared_dir", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="Shared storage (for example a GlusterFS mount); default DIR/shared.")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where the cluster, history.jsonl and report.json go (default: a new "
                   "directory under the system's temporary directory).")
@click.option("--accounts", default=6, show_default=True, type=click.IntRange(1, 100))
@click.option("--faults", "kinds", default="", metavar="KIND,...",
              help=f"Only these kinds of fault ({', '.join(KIND_NAMES)}); default all.")
@click.option("--port-offset", "port_offset", default=40000, show_default=True,
              type=click.IntRange(0, 55000))
@click.option("--prefix", default="127.0.21", show_default=True,
              help="First three octets of the members' loopback addresses.")
@click.option("--netns", is_flag=True,
              help="Run every member in its own network namespace (root, iproute2) and add "
                   "the network faults: a member's link taken down (isolate), the link between "
                   "two members cut (partition).")
@click.option("--small-fs", "small_fs", default=None, metavar="SIZE",
              help="Put the shared storage on a loop-mounted ext4 image of SIZE (64M, 1G; root) "
                   "and add the full-fs fault: the file system filled for a few leases.")
@click.option("--keep", is_flag=True, help="Leave the cluster running at the end.")
@click.option("--recheck", "recheck_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Run no campaign: check the history.jsonl and final.json a campaign left in "
                   "this directory again.")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON report here.")
def chaos(seed: int | None, duration: float, backends: int, frontends: int, shared_dir: Path | None,
          directory: Path | None, accounts: int, kinds: str, port_offset: int, prefix: str,
          netns: bool, small_fs: str | None, keep: bool, recheck_dir: Path | None, report_path: Path | None) -> None:
    """Run a fault campaign against a local cluster and check its history.

    Exits 1 when the checker finds a violation (and prints how to reproduce
    the run), 2 when the campaign itself could not run."""
    from dynamail.chaos.campaign import Options, recheck, run
    from dynamail.cluster.launcher import LauncherError

    if seed is None:
        seed = random.SystemRandom().randrange(1, 2**31)
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    bad = [k for k in chosen if k not in KIND_NAMES]
    if bad:
        raise click.UsageError(f"unknown fault kind(s) {bad}; choose from {', '.join(KIND_NAMES)}")
    needs = {"isolate": ("--netns", netns), "partition": ("--netns", netns),
             "full-fs": ("--small-fs", small_fs is not None)}
    missing = [f"{k} needs {needs[k][0]}" for k in chosen if k in needs and not needs[k][1]]
    if missing and recheck_dir is None:
        raise click.UsageError("; ".join(missing))
    small_bytes = 0
    if small_fs is not None:
        from dynamail.chaos.smallfs import parse_size

        try:
            small_bytes = parse_size(small_fs)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--small-fs") from exc
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix=f"dynamail-chaos-{seed}-"))
    command = ["dynamail", "chaos", "--seed", str(seed), "--duration", f"{duration:g}",
               "--backends", str(backends), "--frontends", str(frontends)]
    if chosen:
        command += ["--faults", ",".join(chosen)]
    if shared_dir is not None:
        command += ["--shared-dir", str(shared_dir)]
    if netns:
        command += ["--netns"]
    if small_fs is not None:
        command += ["--small-fs", small_fs]
    opts = Options(seed=seed, duration=duration, directory=directory, backends=backends,
                   frontends=frontends, shared_dir=shared_dir, accounts=accounts, kinds=chosen,
                   port_offset=port_offset, prefix=prefix, keep=keep, netns=netns,
                   small_fs=small_bytes, command=command)
    try:
        if recheck_dir is not None:
            report = recheck(recheck_dir)
            directory = recheck_dir
        else:
            report = run(opts, say=lambda s: click.echo(s, err=True))
    except (LauncherError, RuntimeError, OSError) as exc:
        click.echo(f"dynamail chaos: the campaign could not run: {exc}", err=True)
        click.echo(f"reproduce: {' '.join(command)}  (directory {directory})", err=True)
        sys.exit(2)
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    seed = int(report.get("seed", seed))  # a recheck names the seed of the run it read
    u = report["unavailability"]
    f = report["faults"]
    click.echo(f"faults injected: {f['injected']} {f['by_kind']} (not triggered: {f['not_triggered']}"
               f"{'; not available: ' + str(f['not_available']) if f.get('not_available') else ''})")
    click.echo(f"operations: {report['operations']}")
    click.echo(f"unavailability: p50 {u['p50']:.2f} s  p99 {u['p99']:.2f} s  max {u['max']:.2f} s "
               f"over {u['count']} (fault, account) pairs; censored {u['censored']}")
    if "not_held" in u:
        n = u["not_held"]
        click.echo(f"  without the {u['held']} pairs whose client waited on a faulted process itself: "
                   f"p50 {n['p50']:.2f} s  p99 {n['p99']:.2f} s  max {n['max']:.2f} s")
        for kind, k in u.get("by_kind", {}).items():
            if k["count"]:
                click.echo(f"  {kind}: {k['count']} pairs, p50 {k['p50']:.2f} s  "
                           f"p99 {k['p99']:.2f} s  max {k['max']:.2f} s")
    click.echo(f"report: {directory / 'report.json'}")
    if report["ok"]:
        click.echo(f"OK: no violation (seed {seed})")
        return
    click.echo(f"VIOLATIONS: {report['violations_by_kind']}")
    for v in report["violations"][:20]:
        again = f" (and {v['repeats']} more times)" if v.get("repeats") else ""
        click.echo(f"  [{v['kind']}] {v['text']}{again}")
        for e in v["evidence"][:4]:
            click.echo(f"      {e}")
    click.echo(f"reproduce: {report['reproduce']}")
    sys.exit(1)
