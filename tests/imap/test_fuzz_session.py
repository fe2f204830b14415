"""Random input to a whole session: it answers or closes, and never crashes."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.imap.conftest import make_context
from tests.imap.memory import MemoryConnection

from dynamail.imap.adapter import serve

_CTX = None


def _ctx():  # type: ignore[no-untyped-def]
    global _CTX
    if _CTX is None:
        _CTX = make_context(Path(tempfile.mkdtemp(prefix="imapfuzz")), users=())
    return _CTX


fragments = st.lists(
    st.one_of(
        st.binary(max_size=60),
        st.sampled_from([b"a NOOP\r\n", b"{5}\r\n", b"{3+}\r\n", b"(", b")", b'"', b"\r\n", b"\x00",
                         b"b LOGIN x y\r\n", b"c AUTHENTICATE PLAIN\r\n", b"~{2}\r\n", b"[", b"*"]),
    ),
    max_size=25,
)


@given(fragments)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_session_input(chunks: list[bytes]) -> None:
    async def go() -> None:
        conn = MemoryConnection()
        task = asyncio.ensure_future(serve(_ctx(), conn))  # type: ignore[arg-type]
        for c in chunks:
            conn.feed(c)
        conn.feed_eof()
        await asyncio.wait_for(task, 10)  # raises if the session crashed
        for line in bytes(conn.out).split(b"\r\n"):
            if line:
                assert line[:1] in (b"*", b"+") or b" " in line, line

    asyncio.run(go())
