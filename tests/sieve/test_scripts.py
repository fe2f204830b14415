"""An account's scripts: put, list, activate, rename, delete, limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dynamail.sieve import limits
from dynamail.sieve.scripts import ScriptError, ScriptStore, blobs_of
from dynamail.storage import FileMailStore


def test_scripts(tmp_path: Path) -> None:
    async def run() -> None:
        store = await FileMailStore().open_account(tmp_path / "account", 1)
        s = ScriptStore(blobs_of(store))
        assert await s.list() == [] and await s.active() is None
        await s.put("vacation", "keep;")
        await s.put("ünïcode", "discard;")
        await s.activate("vacation")
        assert await s.list() == [("vacation", True), ("ünïcode", False)]
        assert await s.active() == ("vacation", "keep;")
        with pytest.raises(ScriptError) as err:
            await s.delete("vacation")
        assert err.value.code == "ACTIVE"
        await s.rename("vacation", "away")
        assert await s.active() == ("away", "keep;")
        with pytest.raises(ScriptError, match="exists"):
            await s.rename("away", "ünïcode")
        await s.activate("")
        await s.delete("away")
        assert await s.list() == [("ünïcode", False)]
        with pytest.raises(ScriptError) as err:
            await s.activate("nope")
        assert err.value.code == "NONEXISTENT"
        with pytest.raises(ScriptError) as err:
            await s.put("big", "#" * (limits.MAX_SCRIPT_SIZE + 1))
        assert err.value.code == "QUOTA/MAXSIZE"
        for bad in ("", "a\x00b", "tab\there", "x" * (limits.MAX_SCRIPT_NAME + 1)):
            with pytest.raises(ScriptError):
                await s.put(bad, "keep;")
        for i in range(limits.MAX_SCRIPTS - 1):
            await s.put(f"s{i}", "keep;")
        with pytest.raises(ScriptError) as err:
            await s.put("one-too-many", "keep;")
        assert err.value.code == "QUOTA/MAXSCRIPTS"
        # a reopened store (a new owner) sees the same scripts
        await store.close()
        again = ScriptStore(blobs_of(await FileMailStore().open_account(tmp_path / "account", 2)))
        assert len(await again.list()) == limits.MAX_SCRIPTS
        with pytest.raises(TypeError):
            blobs_of(object())

    asyncio.run(run())
