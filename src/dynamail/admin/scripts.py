"""Administrative operations on an account's Sieve scripts: list, view,
upload (checked by the delivery compiler), activate, delete.

Part of :class:`dynamail.admin.Admin` (a mixin): the CLI protocol, the JSON
API and WebAdmin call these.  Reading needs the rights to see the account,
changing needs the rights to manage it (an account may change its own).
Scripts live with the account (:mod:`dynamail.sieve.scripts`), so every
operation runs where the account is open: here, or — in a cluster — on its
owner through the routed mailbox operations ``get_meta``/``put_meta``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dynamail.accounts import AccountRef
from dynamail.admin.errors import AdminError, translated
from dynamail.cluster.locator import AccountUnavailable, Local
from dynamail.sieve.commands import compile_script
from dynamail.sieve.grammar import SieveError
from dynamail.sieve.scripts import ScriptError, ScriptStore, blobs_of

T = TypeVar("T")

_CODES = {"NONEXISTENT": "not_found", "ALREADYEXISTS": "exists", "ACTIVE": "bad_request"}


class RemoteBlobs:
    """The account's blobs on its owner, through the cluster's routed mailbox operations."""

    def __init__(self, forward: Callable[..., Awaitable[Any]], placement: Any) -> None:
        self.forward = forward
        self.placement = placement

    async def get_meta(self, key: str) -> bytes | None:
        value = await self.forward(self.placement, "get_meta", (key,))
        return None if value is None else bytes(value)

    async def put_meta(self, key: str, value: bytes | None) -> None:
        await self.forward(self.placement, "put_meta", (key, value))


class SieveScriptOps:
    """Mixin of Admin (uses its account lookup and rights checks)."""

    accounts: Any
    cluster: Any
    _account: Callable[..., Awaitable[AccountRef]]
    _manage_account: Callable[..., Awaitable[Any]]
    _read_account: Callable[..., Awaitable[Any]]

    async def _with_scripts(self, actor: AccountRef, address: str, write: bool,
                            fn: Callable[[ScriptStore], Awaitable[T]]) -> T:
        ref = await self._account(address, actor=actor)
        if write:
            await self._manage_account(actor, ref, self_ok=True)
        else:
            await self._read_account(actor, ref)
        if self.accounts is None:
            raise AdminError("unavailable", "mail storage is not available")
        with translated():
            try:
                async with self.accounts.use(ref) as placement:
                    if isinstance(placement, Local):
                        blobs: Any = blobs_of(placement.store)
                    else:
                        forward = getattr(self.cluster, "forward_mailbox_op", None)
                        if forward is None:
                            raise AdminError("unavailable", "the account is open on another member")
                        blobs = RemoteBlobs(forward, placement)
                    return await fn(ScriptStore(blobs))
            except ScriptError as exc:
                raise AdminError(_CODES.get(exc.code, "bad_request"), exc.text) from exc
            except AccountUnavailable as exc:
                raise AdminError("unavailable", str(exc) or "the account is unavailable") from exc

    async def list_sieve_scripts(self, actor: AccountRef, address: str) -> list[dict[str, Any]]:
        """Every script of the account: ``[{"name", "active"}]``."""
        async def op(s: ScriptStore) -> list[dict[str, Any]]:
            return [{"name": name, "active": active} for name, active in await s.list()]
        return await self._with_scripts(actor, address, False, op)

    async def get_sieve_script(self, actor: AccountRef, address: str, name: str) -> str:
        async def op(s: ScriptStore) -> str:
            text = await s.get(name)
            if text is None:
                raise AdminError("not_found", "no such script")
            return text
        return await self._with_scripts(actor, address, False, op)

    async def put_sieve_script(self, actor: AccountRef, address: str, name: str, text: str,
                               activate: bool = False) -> None:
        """Store a script (refused with the compiler's message when it is
        wrong); with ``activate`` it becomes the active script."""
        if not isinstance(text, str):
            raise AdminError("bad_request", "the script must be text")
        try:
            compile_script(text)
        except SieveError as exc:
            raise AdminError("bad_request", str(exc)) from exc

        async def op(s: ScriptStore) -> None:
            await s.put(name, text)
            if activate:
                await s.activate(name)
        await self._with_scripts(actor, address, True, op)

    async def activate_sieve_script(self, actor: AccountRef, address: str, name: str) -> None:
        """Make ``name`` the active script ("" deactivates every script)."""
        async def op(s: ScriptStore) -> None:
            await s.activate(name)
        await self._with_scripts(actor, address, True, op)

    async def delete_sieve_script(self, actor: AccountRef, address: str, name: str) -> None:
        async def op(s: ScriptStore) -> None:
            await s.delete(name)
        await self._with_scripts(actor, address, True, op)
