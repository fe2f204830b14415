"""The on-disk format is fixed: a data log written by this version (byte
for byte, little-endian, whatever the host) must stay readable by every
later one.  The golden log below holds one append of two messages (one
with a keyword), a flag change and an expunge, each ending with a COMMIT."""

from __future__ import annotations

import binascii
import datetime
import struct
from pathlib import Path

import msgpack

from dynamail import mime
from dynamail.storage import records as R
from dynamail.storage.mailbox import MailboxState

GOLDEN = binascii.unhexlify(
    "a1d30100140000000300000000000000bf71f680000000005438066b01000000000000000000000001000000a1d30500"
    "0b000000030000000000000067eb90b30000000000000000244c6162656c31a1d30200b20000000300000000000000fb"
    "8bbb0e0000000001000000010000000000000075c3936500000000d4fe00002100000000000000140000007600000053"
    "75626a6563743a206f6e650d0a0d0a68690d0a959ac0a36f6e65c0c0c0c0c0c0c0c09ca474657874a5706c61696e92a7"
    "43484152534554a875732d6173636969c0c0a4376269740401c0c0c0c098a474657874a5706c61696e92a74348415253"
    "4554a875732d6173636969c0c0a4376269740401970010140090a437626974a875732d617363696910a1d30200b50000"
    "0003000000000000006019960b0000000002000000010000000000000075c3936500000000d4fe000000000000000000"
    "0017000000760000005375626a6563743a2074776f0d0a0d0a74686572650d0a959ac0a374776fc0c0c0c0c0c0c0c09c"
    "a474657874a5706c61696e92a743484152534554a875732d6173636969c0c0a4376269740701c0c0c0c098a474657874"
    "a5706c61696e92a743484152534554a875732d6173636969c0c0a4376269740701970010170090a437626974a875732d"
    "617363696910a1d307000000000003000000000000009e9f303300000000a1d30300180000000300000000000000e5da"
    "438b00000000020000000000000001000000020000000800000000000000a1d307000000000003000000000000009e9f"
    "303300000000a1d30400100000000300000000000000878f7e290000000003000000000000000100000002000000a1d3"
    "07000000000003000000000000009e9f303300000000"
)


def test_golden_log_reads_back(tmp_path: Path) -> None:
    d = tmp_path / "mbox"
    d.mkdir()
    (d / "data.1").write_bytes(GOLDEN)
    st = MailboxState(d, 0, writable=True, epoch=9, chain=[{"name": "data.1", "origin": "data.1", "seal": None}])
    st.open(seal_foreign=True)
    assert st.data_size == len(GOLDEN) and st.cut_bytes == 0
    assert st.chain[0]["seal"] == len(GOLDEN)
    assert list(st.uids) == [1]
    assert (st.uidnext, st.highestmodseq, st.max_epoch) == (3, 3, 3)
    info = st.info_at(0)
    assert info.flags == {"\\Seen", "$Label1"}
    assert info.internal_date == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    off, blen, mlen = st.location(1)  # type: ignore[misc]
    assert GOLDEN[off : off + blen] == b"Subject: one\r\n\r\nhi\r\n"
    parsed = mime.Parsed.from_list(msgpack.unpackb(GOLDEN[off + blen : off + blen + mlen], raw=False))
    assert parsed.envelope[1] == "one" and parsed.header_end == 16
    st.close()


def test_account_of_the_first_layout_is_converted(tmp_path: Path) -> None:
    """An account written by 0.1 (``epoch``, ``mailboxes.json``,
    ``mail/<id>/data.<g>``) opens; its first owner converts it to the
    per-epoch layout and removes the old names."""
    import asyncio
    import json

    from dynamail.storage import AppendRequest, FileMailStore, epochs_monotonic

    acct = tmp_path / "acct"
    (acct / "mail" / "1").mkdir(parents=True)
    (acct / "mail" / "1" / "data.1").write_bytes(GOLDEN)
    (acct / "epoch").write_text("3\n")
    (acct / "mailboxes.json").write_text(json.dumps({
        "version": 1, "next_id": 2, "last_uidvalidity": 0x80f671bf,
        "mailboxes": {"INBOX": {"id": 1, "uidvalidity": 0x80f671bf, "special_use": None}},
        "subscribed": ["INBOX"],
    }))
    assert FileMailStore().recorded_epoch(acct) == 3

    async def main() -> None:
        store = await FileMailStore().open_account(acct, 4)
        v = await store.select("INBOX")
        assert list(v.uids()) == [1] and v.info(1).flags == {"\\Seen", "$Label1"}
        assert await v.read(1) == b"Subject: one\r\n\r\nhi\r\n"
        assert await store.append("INBOX", [AppendRequest(b"Subject: x\r\n\r\ny\r\n")]) == [3]
        await store.close()

    asyncio.run(main())
    assert not (acct / "mailboxes.json").exists() and not (acct / "epoch").exists()
    assert not (acct / "mail" / "1" / "data.1").exists()
    assert FileMailStore().recorded_epoch(acct) == 4
    assert epochs_monotonic(acct)


def test_record_layout() -> None:
    rec = R.frame(R.EXPUNGE, 0x0102030405060708, R.COUNTED.pack(9, 1), R.UID_ITEM.pack(7))
    magic, rtype, _r, length, epoch, crc, _r2 = struct.unpack("<HBBIQII", rec[:24])
    assert rec[:2] == b"\xa1\xd3" and (magic, rtype, length) == (0xD3A1, 4, 16)
    assert rec[8:16] == bytes([8, 7, 6, 5, 4, 3, 2, 1]) and epoch == 0x0102030405060708  # little-endian
    assert rec[24:] == bytes([9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0])
    hdr = R.parse_header(rec)
    assert hdr is not None and hdr.crc == crc and R.check(rec, hdr, rec[24:])
    damaged = rec[:-1] + b"\x08"
    assert not R.check(damaged, hdr, damaged[24:])
