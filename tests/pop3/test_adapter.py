"""The POP3 adapter in process, on a real ServerContext: ``[pop3]`` settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smtp.live import in_process, next_host, prepare

CAROL = "carol@example.org"


async def _dialogue(host: str, port: int, lines: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    out = [await reader.readline()]
    for line in lines:
        writer.write(line + b"\r\n")
        await writer.drain()
        first = await reader.readline()
        out.append(first)
        if line == b"CAPA" and first.startswith(b"+OK"):
            while (more := await reader.readline()) != b".\r\n":
                out.append(more)
    writer.close()
    return out


@pytest.mark.parametrize("allowed", [False, True])
def test_plaintext_login_before_stls_follows_the_setting(tmp_path: Path, allowed: bool) -> None:
    base = tmp_path / "base"
    prepare(base, {CAROL: "pw"}, "[pop3]\nallow_plaintext_login = true\n" if allowed else "")
    host = next_host()

    async def run() -> list[bytes]:
        async with in_process(base, host, ("pop3",)) as (_, ports):
            return await _dialogue(host, ports["pop3"], [b"CAPA", b"USER " + CAROL.encode(), b"PASS pw", b"QUIT"])

    out = asyncio.run(run())
    assert b"STLS\r\n" in out
    if allowed:
        assert b"USER\r\n" in out and b"SASL PLAIN\r\n" in out
        assert out[-2].startswith(b"+OK Logged in")
    else:
        assert b"USER\r\n" not in out
        assert b"-ERR [AUTH] Plaintext authentication disallowed, use STLS\r\n" in out
        assert not any(x.startswith(b"+OK Logged in") for x in out)
