"""The JSON API's account archive routes: the export streams a file out,
the restore streams one in (``admin.backup`` does the work on the owner).

Both spool the archive in this member's ``BASE/Backup/`` and remove it when
the request ends, so memory stays bounded by ``ARCHIVE_CHUNK`` whatever the
account's size; an upload larger than ``MAX_ARCHIVE`` is refused (413).
When another member has the account open the answer is 409
``owner_elsewhere`` with the owner's name and HTTP admin URL: the client
asks it (``dynamail admin`` does so by itself).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from dynamail.admin import backup
from dynamail.filemodes import open_private
from dynamail.http.errors import ApiError, error_body
from dynamail.http.limits import ARCHIVE_CHUNK, MAX_ARCHIVE
from dynamail.http.routes import Call


def _elsewhere(call: Call, exc: backup.OwnerElsewhere) -> web.Response:
    cfg: Any = call.ctx.config
    scheme = "https" if call.request.secure else "http"
    port = int(cfg.ports[scheme]) + exc.port_offset
    body = error_body("owner_elsewhere", f"the account is open on member {exc.member}; ask it")
    body["error"].update(owner=exc.member, url=f"{scheme}://{exc.host}:{port}")
    return web.Response(status=409, text=json.dumps(body), content_type="application/json")


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


async def export_response(call: Call) -> web.StreamResponse:
    out = backup.spool_path(call.admin, ".tar.gz")
    try:
        try:
            report = await backup.export_account(call.admin, call.actor, call.account, out)
        except backup.OwnerElsewhere as exc:
            return _elsewhere(call, exc)
        size = (await asyncio.to_thread(out.stat)).st_size
        name = call.account.replace("@", "_at_")
        resp = web.StreamResponse(headers={
            "Content-Type": "application/gzip",
            "Content-Disposition": f'attachment; filename="{name}.tar.gz"',
            "X-Dynamail-Export": json.dumps(report, separators=(",", ":")),
        })
        resp.content_length = size
        await resp.prepare(call.request)
        with open(out, "rb") as f:
            while chunk := await asyncio.to_thread(f.read, ARCHIVE_CHUNK):
                await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        await asyncio.to_thread(_unlink, out)


async def _receive(request: web.Request, path: Path) -> None:
    if request.content_length is not None and request.content_length > MAX_ARCHIVE:
        raise ApiError("too_large", f"an archive is at most {MAX_ARCHIVE} bytes")
    received = 0
    with open_private(path, "xb") as f:  # an account's mail: private to the server
        while chunk := await request.content.read(ARCHIVE_CHUNK):
            received += len(chunk)
            if received > MAX_ARCHIVE:
                raise ApiError("too_large", f"an archive is at most {MAX_ARCHIVE} bytes")
            await asyncio.to_thread(f.write, chunk)
    if received == 0:
        raise ApiError("bad_request", "the request body must be an account archive (GET .../export)")


async def restore_response(call: Call) -> Any:
    archive = backup.spool_path(call.admin, ".tar.gz")
    try:
        await _receive(call.request, archive)
        try:
            return await backup.restore_account(call.admin, call.actor, call.account, archive)
        except backup.OwnerElsewhere as exc:
            return _elsewhere(call, exc)
    finally:
        await asyncio.to_thread(_unlink, archive)
