"""Compaction: rewriting a mailbox without its expunged messages.

The live messages (with their flags, MODSEQs and parse results, byte for
byte) are written to a temporary file ``.data.<g+1>.tmp`` after a MAILBOX
record that carries UIDNEXT and HIGHESTMODSEQ, so neither can go back.  The
order of the steps makes a crash at any instant harmless:

1. write and fsync ``.data.<g+1>.tmp`` — a crash leaves a temporary file
   that the next open removes; generation g stays current;
2. write the checkpoint ``index.<g+1>`` (atomically) — a crash leaves an
   index without its data file, removed at the next open;
3. rename the temporary file to ``data.<g+1>`` and fsync the directory —
   the atomic switch: from now on the highest generation, g+1, is current;
4. remove ``data.<g>`` and ``index.<g>`` — a crash leaves them behind and
   the next open removes them.

The epoch is checked before the first and before the switching step.
Runs on the account's I/O thread while the committer waits, so no other
change to the mailbox happens meanwhile.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable
from typing import Any

from dynamail.durable import fsync_dir
from dynamail.storage import records as R
from dynamail.storage.mailbox import MailboxState, data_path, index_path


def write_generation(st: MailboxState, cols: dict[str, Any], epoch: int, check_epoch: Callable[[], None]) -> tuple[Any, ...]:
    """Write the live messages of ``st`` as generation ``st.gen + 1`` and
    switch to it; returns (gen, fd, body offsets, size, last record offset,
    last record CRC)."""
    check_epoch()
    d = st.directory
    gen = st.gen + 1
    tmp = d / f".data.{gen}.tmp"
    offsets = array("Q")
    with open(tmp, "wb") as f:
        pos = 0
        last_off = last_crc = 0

        def put(rec: bytes) -> None:
            nonlocal pos, last_off, last_crc
            hdr = R.parse_header(rec)
            assert hdr is not None
            last_off, last_crc = pos, hdr.crc
            f.write(rec)
            pos += len(rec)

        put(R.frame(R.MAILBOX, epoch, R.MAILBOX_BODY.pack(st.uidvalidity, st.uidnext, st.highestmodseq, gen)))
        for k, kw in enumerate(st.keywords):
            put(R.frame(R.KEYWORD, epoch, R.KEYWORD_FIXED.pack(k), kw.encode("utf-8")))
        for i in range(len(cols["uid"])):
            blen, mlen = cols["blen"][i], cols["mlen"][i]
            raw = os.pread(st.fd, blen + mlen, cols["off"][i])
            fixed = R.MESSAGE_FIXED.pack(cols["uid"][i], cols["modseq"][i], cols["date"][i], cols["tz"][i], 0, cols["flags"][i], blen, mlen)
            offsets.append(pos + R.HEADER_SIZE + R.MESSAGE_FIXED.size)
            put(R.frame(R.MESSAGE, epoch, fixed, raw))
        put(R.frame(R.COMMIT, epoch))
        f.flush()
        os.fsync(f.fileno())
    # the checkpoint of the new generation goes first; the rename of the
    # data file is the atomic switch
    shadow = MailboxState(d, st.uidvalidity, writable=True, fence=check_epoch)
    shadow.gen, shadow.cols = gen, dict(cols, off=offsets)
    shadow.keywords = st.keywords
    shadow.total_size = st.total_size
    shadow.uidnext, shadow.highestmodseq, shadow.max_epoch = st.uidnext, st.highestmodseq, epoch
    shadow.data_size, shadow.last_rec_off, shadow.last_crc = pos, last_off, last_crc
    blob = shadow.checkpoint_bytes()
    shadow.write_checkpoint(blob)
    check_epoch()
    os.replace(tmp, data_path(d, gen))
    fsync_dir(d)
    data_path(d, st.gen).unlink(missing_ok=True)
    index_path(d, st.gen).unlink(missing_ok=True)
    fsync_dir(d)
    fd = os.open(data_path(d, gen), os.O_RDWR)
    return gen, fd, offsets, pos, last_off, last_crc
