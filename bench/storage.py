"""Storage engine benchmark: ``python -m bench.storage [--dir DIR] [--quick]``.

Prints the figures and writes them to ``bench/results/storage.json``:

* ``fsync_per_s`` — write 4 KiB + fsync, repeated, in the benchmark
  directory: the disk's one-at-a-time durability limit;
* ``append_msgs_per_s`` — 1 writer and 32 concurrent writers (group commit),
  4 KiB and 100 KiB messages, each with its ratio to ``fsync_per_s`` and
  the process CPU time per message (all threads);
* ``open_mailbox_ms`` — select of a 100,000-message mailbox in an open
  account, warm (files in the page cache) and cold (page cache dropped for
  the mailbox files with ``posix_fadvise(DONTNEED)``), plus the rebuild
  without an index; ``open_account_and_mailbox_warm_ms`` adds the account
  open (which records the ownership epoch durably);
* ``fetch_flags_all_ms`` — flags of all 100,000 messages (``FETCH 1:* FLAGS``);
* ``fetch_body_mb_per_s`` — reading whole 100 KiB messages;
* ``idle_wake`` — from an append in one session to the wake-up of another
  session's ``wait_for_change`` (IMAP IDLE);
* ``files_per_account`` — files after 10,000 messages into 10 mailboxes;
* ``compaction`` — compacting a 60 MB mailbox (half expunged) while a
  writer appends: its duration, the exclusive switch, append latency;
* with ``--kill-iterations N``, the SIGKILL test of ``tests/storage`` run N
  times (the long form).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dynamail.storage import AppendRequest, FileAccountStore, FileMailStore, fence

RESULTS = Path(__file__).parent / "results" / "storage.json"


def message(size: int, i: int) -> bytes:
    head = (
        b"From: Sender %d <sender%d@example.org>\r\nTo: rcpt@example.net\r\n"
        b"Subject: benchmark message %d\r\nMessage-ID: <%d@bench.example>\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" % (i, i, i, i)
    )
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n"
    body = line * max(1, (size - len(head)) // len(line) + 1)
    return head + body[: max(0, size - len(head))]


def fsync_rate(directory: Path, seconds: float) -> float:
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    block = b"\0" * 4096
    n = 0
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            os.write(fd, block)
            os.fsync(fd)
            n += 1
    finally:
        os.close(fd)
        path.unlink()
    return n / (time.perf_counter() - start)


async def append_vs_fsync(directory: Path, writers: int, size: int, seconds: float, rounds: int = 8) -> tuple[float, float, float]:
    """(appends/s, fsyncs/s, process CPU µs per append) measured in
    alternating slices, so both see the same disk: the fsync rate of a
    shared disk drifts by several times within seconds."""
    path = directory / f"append-{writers}-{size}"
    store = await FileMailStore().open_account(path, 1)
    msgs = [message(size, i) for i in range(64)]
    done = 0
    append_time = 0.0
    fsyncs = 0.0
    fsync_time = 0.0
    cpu = 0.0
    slice_s = seconds / rounds

    async def writer(k: int, stop: float) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            await store.append("INBOX", [AppendRequest(msgs[i % len(msgs)])])
            done += 1
            i += writers

    for _ in range(rounds):
        rate = fsync_rate(directory, slice_s)
        fsyncs += rate * slice_s
        fsync_time += slice_s
        start = time.perf_counter()
        cpu_start = time.process_time()
        stop = start + slice_s
        await asyncio.gather(*(writer(k, stop) for k in range(writers)))
        append_time += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
    await store.close()
    shutil.rmtree(path, ignore_errors=True)
    return done / append_time, fsyncs / fsync_time, cpu / max(done, 1) * 1e6


async def compaction_under_load(directory: Path, messages: int = 600, size: int = 100 * 1024) -> dict[str, Any]:
    """Compact a mailbox of ``messages`` × ``size`` with half of them expunged
    while one writer appends 4 KiB messages without pause: how long the
    compaction takes, how long writers wait for its switch, and the append
    latency meanwhile (against the same writer without a compaction)."""
    path = directory / "compaction"
    store = await FileMailStore().open_account(path, 1)
    for start in range(0, messages, 50):
        await store.append("INBOX", [AppendRequest(message(size, i)) for i in range(start, min(messages, start + 50))])
    v = await store.select("INBOX")
    await v.store(list(v.uids())[::2], "add", frozenset({"\\Deleted"}))
    small = [message(4096, i) for i in range(64)]

    async def writer(stop: asyncio.Event, lat: list[float]) -> None:
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            await store.append("Other", [AppendRequest(small[i % 64])])
            lat.append((time.perf_counter() - t) * 1000)
            i += 1

    await store.create_mailbox("Other")
    base: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(writer(stop, base))
    await asyncio.sleep(2.0)
    stop.set()
    await task
    switch_at = 0.0

    async def hook(stage: str) -> None:
        nonlocal switch_at
        if stage == "switch":
            switch_at = time.perf_counter()

    store._compact_hook = hook
    store._maybe_compact = lambda *a: None  # type: ignore[method-assign]  # measured by hand below
    await v.expunge()
    during: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(writer(stop, during))
    await asyncio.sleep(0.2)
    t = time.perf_counter()
    reclaimed = await store.compact("INBOX")
    done = time.perf_counter()
    stop.set()
    await task
    v.close()
    await store.close()
    shutil.rmtree(path, ignore_errors=True)
    return {
        "mailbox_mb": round(messages * size / 1e6, 1),
        "reclaimed_mb": round(reclaimed / 1e6, 1),
        "compaction_ms": round((done - t) * 1000, 1),
        "switch_ms": round((done - switch_at) * 1000, 1),
        "append_ms_without": {"median": round(statistics.median(base), 2), "max": round(max(base), 1)},
        "append_ms_during": {"median": round(statistics.median(during), 2), "max": round(max(during), 1), "count": len(during)},
    }


def drop_cache(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


async def big_mailbox(directory: Path, count: int) -> dict[str, Any]:
    path = directory / "big"
    store = await FileMailStore().open_account(path, 1)
    t0 = time.perf_counter()
    batch = 1000
    for start in range(0, count, batch):
        reqs = [
            AppendRequest(message(700 + (i % 7) * 100, i), frozenset({"\\Seen"}) if i % 3 else frozenset())
            for i in range(start, min(count, start + batch))
        ]
        await store.append("INBOX", reqs)
    fill_s = time.perf_counter() - t0
    await store.close()
    out: dict[str, Any] = {"messages": count, "fill_s": round(fill_s, 1)}

    async def open_select(epoch: int) -> tuple[float, FileAccountStore, Any]:
        """Time the select of the mailbox (index load, tail replay, view)
        on a freshly opened account."""
        s = await FileMailStore().open_account(path, epoch)
        t = time.perf_counter()
        v = await s.select("INBOX")
        return (time.perf_counter() - t) * 1000, s, v

    epoch = 1
    warm: list[float] = []
    for _ in range(5):
        epoch += 1
        ms, s, v = await open_select(epoch)
        assert len(v.uids()) == count
        warm.append(ms)
        v.close()
        await s.close()
    cold: list[float] = []
    for _ in range(3):
        drop_cache(path)
        epoch += 1
        ms, s, v = await open_select(epoch)
        cold.append(ms)
        v.close()
        await s.close()
    # rebuild: the index is gone, the log is replayed
    mdir = next(p for p in (path / "mail").iterdir())
    (mdir / f"index.{fence.manifest_epochs(path)[-1]}").unlink()
    epoch += 1
    rebuild_ms, s, v = await open_select(epoch)
    v.close()
    await s.close()
    out["open_mailbox_ms"] = {"warm": round(statistics.median(warm), 1), "cold": round(statistics.median(cold), 1), "rebuild_without_index": round(rebuild_ms, 1)}
    # the whole path of a session: open the account (records the epoch:
    # two fsyncs) and select
    whole = []
    for _ in range(3):
        epoch += 1
        t = time.perf_counter()
        s = await FileMailStore().open_account(path, epoch)
        v = await s.select("INBOX")
        whole.append((time.perf_counter() - t) * 1000)
        v.close()
        await s.close()
    out["open_account_and_mailbox_warm_ms"] = round(statistics.median(whole), 1)

    epoch += 1
    s = await FileMailStore().open_account(path, epoch)
    v = await s.select("INBOX")
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        flags = v.flags_many(v.uids())
        runs.append((time.perf_counter() - t) * 1000)
        assert len(flags) == count
    t = time.perf_counter()
    flags = [v.flags(uid) for uid in v.uids()]
    one_by_one_ms = (time.perf_counter() - t) * 1000
    info_t = time.perf_counter()
    infos = v.infos(v.uids())
    info_ms = (time.perf_counter() - info_t) * 1000
    assert len(infos) == count
    out["fetch_flags_all_ms"] = round(min(runs), 1)
    out["fetch_flags_one_by_one_ms"] = round(one_by_one_ms, 1)
    out["fetch_info_all_ms"] = round(info_ms, 1)
    v.close()
    await s.close()
    return out


async def body_rate(directory: Path, seconds: float) -> float:
    path = directory / "bodies"
    store = await FileMailStore().open_account(path, 1)
    for start in range(0, 300, 50):
        await store.append("INBOX", [AppendRequest(message(100 * 1024, i)) for i in range(start, start + 50)])
    v = await store.select("INBOX")
    uids = list(v.uids())
    total = 0
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        for uid in uids:
            total += len(await v.read(uid))
    elapsed = time.perf_counter() - t
    v.close()
    await store.close()
    return total / elapsed / 1e6


async def idle_wake(directory: Path, trials: int = 50) -> dict[str, float]:
    """Time from the start of an append in one session to the wake-up of
    another session waiting in ``wait_for_change`` (IMAP IDLE), and from the
    append's acknowledgement to that wake-up."""
    path = directory / "idle"
    store = await FileMailStore().open_account(path, 1)
    watcher = await store.select("INBOX")
    total: list[float] = []
    after_ack: list[float] = []
    for i in range(trials):
        woke = 0.0

        async def wait() -> None:
            nonlocal woke
            await watcher.wait_for_change(10.0)
            woke = time.perf_counter()

        task = asyncio.create_task(wait())
        await asyncio.sleep(0.001)
        t = time.perf_counter()
        await store.append("INBOX", [AppendRequest(message(2000, i))])
        acked = time.perf_counter()
        await task
        await watcher.refresh()
        total.append((woke - t) * 1000)
        after_ack.append((woke - acked) * 1000)
    watcher.close()
    await store.close()
    return {"append_start_to_wake_ms": round(statistics.median(total), 2), "ack_to_wake_ms": round(statistics.median(after_ack), 3)}


async def files_per_account(directory: Path) -> dict[str, int]:
    path = directory / "files"
    store = await FileMailStore().open_account(path, 1)
    names = [f"Folder{i}" for i in range(9)]
    for n in names:
        await store.create_mailbox(n)
    targets = ["INBOX", *names]
    for i in range(0, 10000, 100):
        await asyncio.gather(*(store.append(targets[(i // 100 + k) % 10], [AppendRequest(message(2000, i + k))]) for k in range(100)))
    await store.close()

    def count() -> tuple[int, int]:
        files = dirs = 0
        for _root, ds, fs in os.walk(path):
            files += len(fs)
            dirs += len(ds)
        return files, dirs

    files, dirs = count()
    # 100 ownership changes: each owner appends to three mailboxes and
    # leaves, cleanly or as a crash would (every third)
    for epoch in range(2, 102):
        s = await FileMailStore().open_account(path, epoch)
        for k in range(3):
            await s.append(targets[(epoch + k) % 10], [AppendRequest(message(2000, epoch * 10 + k))])
        await s.close(checkpoint=epoch % 3 != 0)
    files_after, dirs_after = count()
    return {"files": files, "directories": dirs, "messages": 10000, "mailboxes": 10,
            "files_after_100_owners": files_after, "directories_after_100_owners": dirs_after}


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    res: dict[str, Any] = {}
    secs = 1.0 if args.quick else 3.0
    # The disk's fsync rate drifts with the machine's load, so each append
    # run alternates with fsync probes and is compared with them.
    rates: list[float] = []
    appends: dict[str, Any] = {}
    for size, label in ((4096, "4KiB"), (100 * 1024, "100KiB")):
        for writers in (1, 32):
            rate, fs, cpu_us = await append_vs_fsync(work, writers, size, 2 * secs)
            rates.append(fs)
            key = f"{label}_{writers}_writer{'s' if writers > 1 else ''}"
            appends[key] = {
                "msgs_per_s": round(rate, 1),
                "fsync_per_s_alongside": round(fs, 1),
                "ratio_to_fsync": round(rate / fs, 2),
                "cpu_us_per_msg": round(cpu_us, 1),
            }
            print(f"append {key}: {rate:.0f}/s (fsync alongside: {fs:.0f}/s; {rate / fs:.2f}x; {cpu_us:.0f} µs CPU/msg)", flush=True)
    res["fsync_per_s"] = round(statistics.median(rates), 1)
    print(f"fsync_per_s (median): {res['fsync_per_s']:.0f}", flush=True)
    res["append_msgs_per_s"] = appends
    big = await big_mailbox(work, 10000 if args.quick else 100000)
    res.update(big)
    print(f"open_mailbox_ms ({big['messages']} messages): {big['open_mailbox_ms']}; with account open: {big['open_account_and_mailbox_warm_ms']}", flush=True)
    print(f"fetch_flags_all_ms: {big['fetch_flags_all_ms']} (info: {big['fetch_info_all_ms']})", flush=True)
    mb = await body_rate(work, secs)
    res["fetch_body_mb_per_s"] = round(mb, 1)
    print(f"fetch_body_mb_per_s: {mb:.0f}", flush=True)
    idle = await idle_wake(work)
    res["idle_wake"] = idle
    print(f"idle_wake: {idle}", flush=True)
    comp = await compaction_under_load(work, 200 if args.quick else 600)
    res["compaction"] = comp
    print(f"compaction: {comp}", flush=True)
    fpa = await files_per_account(work)
    res["files_per_account"] = fpa
    print(f"files_per_account: {fpa}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="where to put the benchmark files (default: a temporary directory under bench/)")
    ap.add_argument("--quick", action="store_true", help="shorter runs, 10,000-message mailbox")
    ap.add_argument("--kill-iterations", type=int, default=0, help="also run the SIGKILL test N times")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/storage.json")
    args = ap.parse_args()
    base = args.dir or Path(__file__).parent
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=base))
    try:
        res = asyncio.run(main_async(args, work))
        if args.kill_iterations:
            from tests.storage.test_kill import run_iterations

            t = time.perf_counter()
            acked = run_iterations(work / "kill", args.kill_iterations, seed=int(time.time()))
            res["kill_test"] = {"iterations": args.kill_iterations, "acknowledged_messages": acked, "lost": 0, "seconds": round(time.perf_counter() - t, 1)}
            print(f"kill test: {res['kill_test']}", flush=True)
        res["platform"] = {"cpus": os.cpu_count(), "quick": args.quick}
        if not args.no_write:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(res, indent=2) + "\n")
            print(f"written to {RESULTS}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
