"""One sample of every cluster message, the source of the golden frames.

``python -m tests.cluster.samples`` writes the golden files of a NEW protocol
version; the files of a released version are never rewritten.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dynamail.cluster import wire

N = bytes(range(32))
SAMPLES: list[wire.Message] = [
    wire.Hello((1, 2), "b1", "backend", N, ("127.0.7.1", 10000, 17070)),
    wire.Challenge(1, "b2", N[::-1], b"p" * 32),
    wire.Auth(b"q" * 32),
    wire.Welcome(1),
    wire.Ok(7),
    wire.Error(8, "not-controller", "ask b2"),
    wire.Heartbeat(9, "b1", True, 12, 340, 3, 17, 123456),
    wire.HeartbeatAck(9, (3 << 32) | 5, "b2", 1500, ("127.0.7.2", 10000, 17070)),
    wire.Whois(10),
    wire.ControllerInfo(10, "b3", 3, "b2", ("127.0.7.2", 10000, 17070), True),
    wire.Resync(11, "b1", "backend", True, "0.1.0", 4, (("example.com/ann", (2 << 32) | 9),)),
    wire.Roles("b3", 3, "b1", ("127.0.7.2", 10000, 17070)),
    wire.SetReady(12, "b2", False),
    wire.StatusRequest(13),
    wire.StatusReply(13, "b3", "b1", 3, (("b1", "backend", True, True, 40, 2, 5, "0.1.0", "127.0.7.1"),)),
    wire.Open(14, "example.com/ann", 77, "b1", False),
    wire.Grant(14, "example.com/ann", "b2", (3 << 32) | 1, 3, ("127.0.7.2", 10000, 17070)),
    wire.Release("example.com/ann", (3 << 32) | 1),
    wire.Locate(15, "example.com/bob", True),
    wire.Location(15, "example.com/bob", "", 0, ("", 0, 0)),
    wire.Deliver(16, "example.com/ann", "INBOX", ("\\Seen",), b"Subject: hi\r\n\r\nbody\r\n",
                 "q1f2e3d4c5b6a7980/example.com/ann", "alice@example.org"),
    wire.Delivered(16, 42),
    wire.Changed("account", "example.com/ann", "b1"),
    wire.AdminCall(17, "create_account", "postmaster@main", ("example.com", "ann", {"RealName": "Ann"})),
    wire.AdminResult(17, False, None, "exists", "account exists"),
    wire.Drain(18, "b2", 30000),
]


def golden_path(version: int, msg: wire.Message) -> Path:
    return Path(__file__).parent / "golden" / f"v{version}" / f"{type(msg).__name__}.bin"


def main(version: int) -> None:
    for msg in SAMPLES:
        path = golden_path(version, msg)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wire.encode(msg, version))
        print("wrote", path)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
