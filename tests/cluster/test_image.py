from __future__ import annotations

import datetime

import msgpack

from dynamail.accounts import AccountRef
from dynamail.cluster import image, wire
from dynamail.directory.model import Alert, NoSuchAccount
from dynamail.storage.api import MailboxListing


def roundtrip(value: object) -> object:
    call = wire.AdminCall(1, "directory:x", "", (image.pack_value(value),))
    back = wire.decode_payload(wire.encode(call, 1)[4:], 1)
    assert isinstance(back, wire.AdminCall)
    return image.unpack_value(back.args[0])


def test_values_survive_the_wire() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.UTC)
    value = [[AccountRef("d.test", "ann", True), {"RealName": "Ann", "x": [1, 2]}, ("a", 1)],
             {"settings": {"k": "v"}, "when": when, "alert": Alert(when, "hi"),
              "rights": {"Master"}, "box": MailboxListing("INBOX", None, True, False)}]
    assert roundtrip(value) == value
    assert msgpack.packb(image.pack_value(value))


def test_errors_are_rebuilt_as_their_class() -> None:
    err = image.rebuild_error(image.error_code(NoSuchAccount("x")), "unknown account")
    assert isinstance(err, NoSuchAccount)
    assert "mystery" in str(image.rebuild_error("Mystery", "mystery"))


def test_only_listed_operations_are_routed() -> None:
    assert "create_domain" in image.DIRECTORY_OPS and "__init__" not in image.DIRECTORY_OPS
    assert "append" not in image.MAILBOX_OPS
