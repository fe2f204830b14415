"""The admin CLI's Sieve script commands (dynamail extensions) through a
real Admin and storage: upload (checked), list, view, activate, delete, rights."""

from __future__ import annotations

from typing import Any

import pytest

from .test_commands import _setup


def test_sieve_scripts(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        if t.ctx.accounts is None:
            pytest.skip("mail storage not built")
        await t.expect('PUTSIEVESCRIPT alice@example.test NAME away SCRIPT "require \\"vacation\\"; '
                       'vacation \\"Away.\\";" ACTIVATE', r"200 OK")
        await t.expect('PUTSIEVESCRIPT alice@example.test NAME spare SCRIPT "keep;"', r"200 OK")
        assert await t.data("LISTSIEVESCRIPTS alice@example.test") == {"away": "YES", "spare": "NO"}
        assert await t.data("GETSIEVESCRIPT alice@example.test NAME away") == 'require "vacation"; vacation "Away.";'
        await t.expect('PUTSIEVESCRIPT alice@example.test NAME bad SCRIPT "fileinto \\"x\\";"',
                       r"501 line 1: fileinto requires the 'fileinto' extension")
        await t.expect("DELETESIEVESCRIPT alice@example.test NAME away", r"5\d\d The active script cannot be deleted")
        await t.expect("ACTIVATESIEVESCRIPT alice@example.test NAME spare", r"200 OK")
        await t.expect("DELETESIEVESCRIPT alice@example.test NAME away", r"200 OK")
        await t.expect("GETSIEVESCRIPT alice@example.test NAME away", r"5\d\d no such script")
        await t.expect("ACTIVATESIEVESCRIPT alice@example.test", r"200 OK")
        assert await t.data("LISTSIEVESCRIPTS alice@example.test") == {"spare": "NO"}

    play(s)
