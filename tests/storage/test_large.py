"""Large messages stream: an append from a file and a COPY of a 50 MB
message keep Python's memory far below the message size."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tracemalloc
from pathlib import Path

from dynamail import mime
from dynamail.storage import AppendRequest, FileAccountStore, FileMailStore

SIZE = 50 << 20
LINE = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5"  # 68 bytes


def write_message(path: Path) -> tuple[str, int, int]:
    """A multipart message of about SIZE bytes with bare LF line ends (and one
    CRLF line split over the 1 MiB chunk border is likely somewhere); returns
    the SHA-256 and length of its canonical (CRLF) form and the line count of
    the attachment."""
    head = (
        b"From: a@example.org\nTo: b@example.net\nSubject: big\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\n\n'
        b'--XYZ\nContent-Type: text/plain; charset="utf-8"\n\nsee attachment\r\n'
        b"--XYZ\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    )
    tail = b"\n--XYZ--\n"
    sha = hashlib.sha256()
    lines = 0
    with open(path, "wb") as f:
        f.write(head)
        sha.update(mime.canonical(head))
        block = (LINE + b"\n") * 1000
        cblock = (LINE + b"\r\n") * 1000
        written = len(head)
        while written < SIZE:
            f.write(block)
            sha.update(cblock)
            written += len(block)
            lines += 1000
        f.write(LINE)  # last attachment line, its line end belongs to the delimiter
        sha.update(LINE)
        lines += 1
        f.write(tail)
        sha.update(mime.canonical(tail))
    clen = os.path.getsize(path) + path.read_bytes().count(b"\n") - path.read_bytes().count(b"\r\n")
    return sha.hexdigest(), clen, lines


async def digest(store: FileAccountStore, mailbox: str, uid: int) -> tuple[str, int]:
    v = await store.select(mailbox)
    f, off, n = await v.open_body(uid)
    sha = hashlib.sha256()
    pos = 0
    while pos < n:
        got = os.pread(f.fileno(), min(1 << 20, n - pos), off + pos)
        sha.update(got)
        pos += len(got)
    v.close()
    return sha.hexdigest(), n


def test_append_and_copy_50mb_stream(tmp_path: Path) -> None:
    src = tmp_path / "spool.eml"
    want_sha, want_len, att_lines = write_message(src)
    acct = tmp_path / "a"

    async def main() -> None:
        store = await FileMailStore().open_account(acct, 1)
        await store.create_mailbox("Archive")
        await store.append("INBOX", [AppendRequest(b"Subject: small\r\n\r\nx\r\n")])
        tracemalloc.start()
        try:
            with open(src, "rb") as f:
                uids = await store.append("INBOX", [AppendRequest(f, frozenset({"\\Seen"}))])
            _cur, peak_append = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            v = await store.select("INBOX")
            res = await v.copy(uids, "Archive")
            _cur, peak_copy = tracemalloc.get_traced_memory()
            v.close()
        finally:
            tracemalloc.stop()
        assert uids == [2]
        assert res.dest_uids == [1]
        # far below the 50 MB message: bounded chunks, no whole copy
        assert peak_append < 6 << 20, peak_append
        assert peak_copy < 6 << 20, peak_copy
        assert await digest(store, "INBOX", 2) == (want_sha, want_len)
        assert await digest(store, "Archive", 1) == (want_sha, want_len)
        v = await store.select("Archive")
        assert v.info(1).size == want_len
        bs = await v.bodystructure(1)
        assert bs[0][:2] == ["text", "plain"]  # type: ignore[index]
        att = bs[1]  # type: ignore[index]
        assert att[:2] == ["application", "octet-stream"] and att[5] == "base64"
        assert att[6] == att_lines * (len(LINE) + 2) - 2  # its size in octets
        assert (await v.part(1, [1])) == b"see attachment"
        assert (await v.header(1)).startswith(b"From: a@example.org\r\n")
        v.close()
        await store.close(checkpoint=False)  # a crash: the next open replays the log
        store = await FileMailStore().open_account(acct, 2)
        assert await digest(store, "Archive", 1) == (want_sha, want_len)
        assert (await store.status("INBOX")).messages == 2
        assert not [p for p in acct.rglob("*") if p.name.endswith(".tmp")]
        await store.close()

    asyncio.run(main())


def test_canonical_copy_chunk_borders() -> None:
    # every split of CR/LF pairs across chunk borders gives the same result
    data = b"a\r\nb\nc\r\r\nd\re\n\r\n\n\rf\r"
    for chunk in range(1, len(data) + 1):
        out = io.BytesIO()
        length, _crc = mime.canonical_copy(io.BytesIO(data), out, chunk)
        assert out.getvalue() == mime.canonical(data), chunk
        assert length == len(out.getvalue())


def test_mapped_parse_equals_bytes_parse(tmp_path: Path) -> None:
    msg = mime.canonical(
        b"Subject: x\nContent-Type: multipart/alternative; boundary=b\n\n"
        b"pre\n--b\nContent-Type: text/plain\n\none\ntwo\n--b\nContent-Type: message/rfc822\n\n"
        b"Subject: inner\n\ninner body\n--b--\nepilogue\n"
    )
    p = tmp_path / "m"
    p.write_bytes(msg)
    with open(p, "rb") as f, mime.MappedMessage(f.fileno(), len(msg)) as mapped:
        assert mime.parse(mapped).to_list() == mime.parse(msg).to_list()
