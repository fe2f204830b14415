"""Random operation sequences against the engine and an in-memory model,
across simulated crashes: the store is dropped without writing index
checkpoints, a partly written record is left at the end of a data log, and
index files are cut at random points; after reopening, every acknowledged
change is there and nothing else."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dynamail.storage import AppendRequest, FileMailStore
from dynamail.storage import account as account_mod
from dynamail.storage import records as R

MAILBOXES = ("INBOX", "Other")
FLAGS = st.frozensets(st.sampled_from(["\\Seen", "\\Deleted", "\\Flagged", "$Work", "later"]), max_size=3)
BODIES = st.binary(min_size=0, max_size=300).map(lambda b: b"Subject: t\r\n\r\n" + b.replace(b"\n", b"\r\n").replace(b"\r\r", b"\r"))


def canon(body: bytes) -> bytes:
    import re

    return re.sub(rb"\r?\n", b"\r\n", body)


class StorageMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="dm-state-"))
        self.path = self.tmp / "acct"
        self.loop = asyncio.new_event_loop()
        self.epoch = 1
        self.store = self.run(FileMailStore().open_account(self.path, self.epoch))
        self.run(self.store.create_mailbox("Other"))
        self.model: dict[str, dict[int, tuple[bytes, frozenset[str]]]] = {m: {} for m in MAILBOXES}
        self.top: dict[str, int] = dict.fromkeys(MAILBOXES, 0)
        self.watch = self.run(self.store.select("INBOX"))  # a second session, refreshed now and then

    def new_watch(self) -> None:
        self.watch = self.run(self.store.select("INBOX"))

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(mbox=st.sampled_from(MAILBOXES), items=st.lists(st.tuples(BODIES, FLAGS), min_size=1, max_size=3))
    def append(self, mbox: str, items: list[tuple[bytes, frozenset[str]]]) -> None:
        uids = self.run(self.store.append(mbox, [AppendRequest(b, f) for b, f in items]))
        assert len(uids) == len(items)
        assert uids == sorted(uids) and uids[0] > self.top[mbox]
        self.top[mbox] = uids[-1]
        for uid, (b, f) in zip(uids, items, strict=True):
            self.model[mbox][uid] = (canon(b), f)

    @rule(mbox=st.sampled_from(MAILBOXES), pick=st.lists(st.integers(0, 50), max_size=4), mode=st.sampled_from(["set", "add", "remove"]), flags=FLAGS)
    def store_flags(self, mbox: str, pick: list[int], mode: str, flags: frozenset[str]) -> None:
        uids = sorted(self.model[mbox])
        chosen = sorted({uids[i % len(uids)] for i in pick}) if uids else []

        async def go() -> None:
            v = await self.store.select(mbox)
            await v.store(chosen, mode, flags)
            v.close()

        self.run(go())
        for uid in chosen:
            body, old = self.model[mbox][uid]
            new = flags if mode == "set" else (old | flags if mode == "add" else old - flags)
            self.model[mbox][uid] = (body, new)

    @rule(mbox=st.sampled_from(MAILBOXES))
    def expunge(self, mbox: str) -> None:
        async def go() -> list[int]:
            v = await self.store.select(mbox)
            gone = await v.expunge()
            v.close()
            return gone

        gone = self.run(go())
        expected = sorted(u for u, (_b, f) in self.model[mbox].items() if "\\Deleted" in f)
        assert gone == expected
        for u in gone:
            del self.model[mbox][u]

    @rule(src=st.sampled_from(MAILBOXES), pick=st.lists(st.integers(0, 50), min_size=1, max_size=3), do_move=st.booleans())
    def copy_or_move(self, src: str, pick: list[int], do_move: bool) -> None:
        dst = MAILBOXES[1 - MAILBOXES.index(src)]
        uids = sorted(self.model[src])
        if not uids:
            return
        chosen = sorted({uids[i % len(uids)] for i in pick})

        async def go():  # type: ignore[no-untyped-def]
            v = await self.store.select(src)
            res = await (v.move(chosen, dst) if do_move else v.copy(chosen, dst))
            v.close()
            return res

        res = self.run(go())
        assert res.source_uids == chosen
        for s, d in zip(res.source_uids, res.dest_uids, strict=True):
            assert d > self.top[dst]
            self.top[dst] = d
            self.model[dst][d] = self.model[src][s]
            if do_move:
                del self.model[src][s]

    @rule()
    def refresh_watch(self) -> None:
        before = list(self.watch.uids())
        changes = self.run(self.watch.refresh())
        after = list(self.watch.uids())
        assert after == sorted(self.model["INBOX"])
        assert set(changes.expunged) <= set(before)
        assert sorted(set(before) - set(changes.expunged)) == [u for u in after if u in set(before)]
        assert changes.added == [u for u in after if u not in set(before)]
        assert all(u > max(before, default=0) for u in changes.added)

    @rule(reopen_between=st.booleans())
    def rename_roundtrip(self, reopen_between: bool) -> None:
        """Rename "Other" away (as a child of a new parent) and back; its
        messages, UIDs and UIDVALIDITY travel with the name."""
        before = self.run(self.store.status("Other"))
        self.run(self.store.create_mailbox("Parent"))
        self.run(self.store.rename_mailbox("Other", "Parent/Moved"))
        if reopen_between:
            self.reopen()
        moved = self.run(self.store.status("Parent/Moved"))
        assert (moved.messages, moved.uidvalidity, moved.uidnext) == (before.messages, before.uidvalidity, before.uidnext)
        self.run(self.store.rename_mailbox("Parent/Moved", "Other"))
        self.run(self.store.delete_mailbox("Parent"))
        names = {m.name for m in self.run(self.store.list_mailboxes())}
        assert names == set(MAILBOXES)

    @rule(mbox=st.sampled_from(MAILBOXES))
    def compact(self, mbox: str) -> None:
        self.run(self.store.compact(mbox))

    @rule()
    def reopen(self) -> None:
        self.watch.close()
        self.run(self.store.close())
        self.epoch += 1
        self.store = self.run(FileMailStore().open_account(self.path, self.epoch))
        self.new_watch()

    @rule(mbox=st.sampled_from(MAILBOXES), junk=st.integers(1, 200), cut=st.floats(0, 1), cut_index=st.booleans())
    def crash(self, mbox: str, junk: int, cut: float, cut_index: bool) -> None:
        """Die after the last acknowledged change, in the middle of writing a record."""
        self.watch.close()
        self.run(self.store.close(checkpoint=False))
        from .layout import index_file, last_log

        record = R.frame(R.MESSAGE, self.epoch, R.MESSAGE_FIXED.pack(10**6, 1, 0, 0, 0, 0, 300, 0), b"x" * 300)
        with open(last_log(self.path, mbox), "ab") as f:
            f.write(record[: min(junk, len(record) - 1)])
        index = index_file(self.path, mbox)
        if cut_index and index.exists():
            data = index.read_bytes()
            index.write_bytes(data[: int(len(data) * cut)])
        self.epoch += 1
        self.store = self.run(FileMailStore().open_account(self.path, self.epoch))
        self.new_watch()

    @rule(mbox=st.sampled_from(MAILBOXES), items=st.lists(st.tuples(BODIES, FLAGS), min_size=1, max_size=3), cut=st.floats(0, 0.999))
    def torn_append(self, mbox: str, items: list[tuple[bytes, frozenset[str]]], cut: float) -> None:
        """Power fails while an append is being written: the log keeps a
        random prefix of its bytes, and the append was never acknowledged."""
        from .layout import last_log

        async def settle() -> None:  # background folds and compactions rename files
            while self.store._compactions:
                await asyncio.gather(*self.store._compactions.values(), return_exceptions=True)

        self.before_torn_write()
        self.run(settle())
        # no background compaction or fold between the append and the tear:
        # the torn bytes must be the append's, at the end of the file it went to
        self.store._maybe_compact = lambda *_args: None  # type: ignore[method-assign]
        old = last_log(self.path, mbox)
        before = old.stat().st_size
        self.run(self.store.append(mbox, [AppendRequest(b, f) for b, f in items]))
        data = last_log(self.path, mbox)
        if data != old:  # the append started this owner's own file
            before = R.HEADER_SIZE + R.MAILBOX_BODY.size
        after = data.stat().st_size
        self.watch.close()
        self.run(self.store.close(checkpoint=False))
        with open(data, "r+b") as f:
            f.truncate(before + int((after - before) * cut))
        self.epoch += 1
        self.store = self.run(FileMailStore().open_account(self.path, self.epoch))
        self.new_watch()

    def before_torn_write(self) -> None:
        pass

    def mailbox_dir(self, mbox: str) -> Path:
        from .layout import mailbox_dir

        return mailbox_dir(self.path, mbox)

    @invariant()
    def same_as_model(self) -> None:
        async def check() -> None:
            for mbox in MAILBOXES:
                v = await self.store.select(mbox)
                assert list(v.uids()) == sorted(self.model[mbox])
                for uid, (body, flags) in self.model[mbox].items():
                    assert v.info(uid).flags == flags
                    assert await v.read(uid) == body
                assert v.uidnext() > self.top[mbox]
                status = await self.store.status(mbox)
                assert status.messages == len(self.model[mbox])
                assert status.unseen == sum(1 for _b, f in self.model[mbox].values() if "\\Seen" not in f)
                assert status.deleted == sum(1 for _b, f in self.model[mbox].values() if "\\Deleted" in f)
                assert status.size == sum(len(b) for b, _f in self.model[mbox].values())
                v.close()
            used = await self.store.quota_usage()
            assert used == (
                sum(len(b) for m in self.model.values() for b, _f in m.values()),
                sum(len(m) for m in self.model.values()),
            )

        self.run(check())


# every step opens, writes and fsyncs real files: slow on a loaded machine
pytestmark = pytest.mark.timeout(600)

StorageMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStorage = StorageMachine.TestCase


class BackgroundCompactionMachine(StorageMachine):
    """The same with every expunge starting a background compaction that
    catches up in the smallest steps, so compactions interleave with the
    other operations (each rule lets pending tasks run a little)."""

    def __init__(self) -> None:
        self.saved = (account_mod.COMPACT_MIN_DEAD, account_mod.COMPACT_SHARE, account_mod.CATCH_UP_HOLD)
        account_mod.COMPACT_MIN_DEAD, account_mod.COMPACT_SHARE, account_mod.CATCH_UP_HOLD = -1, -1.0, 0
        super().__init__()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            account_mod.COMPACT_MIN_DEAD, account_mod.COMPACT_SHARE, account_mod.CATCH_UP_HOLD = self.saved

    @rule()
    def let_compactions_finish(self) -> None:
        async def wait() -> None:
            for task in list(self.store._compactions.values()):
                await task

        self.run(wait())

    def before_torn_write(self) -> None:
        # the torn write is made in the log the append goes to: no switch meanwhile
        self.let_compactions_finish()


BackgroundCompactionMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestBackgroundCompaction = BackgroundCompactionMachine.TestCase

