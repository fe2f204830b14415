"""Fuzz target for the CLI data format and the CLI core.

Run by hand: ``python tests/cliproto/fuzz_cli.py [seconds]``.  With atheris
installed it is coverage-guided (``python tests/cliproto/fuzz_cli.py -atheris``);
otherwise it feeds random and mutated inputs for the given time.  Any
exception other than the parser's own ``DataFormatError`` is a bug.
"""

from __future__ import annotations

import random
import sys
import time

from dynamail.accounts import AccountRef
from dynamail.cliproto.core import Authenticate, CliCore, Execute, Send, State
from dynamail.cliproto.datafmt import DataFormatError, parse, write

SEEDS = [
    b'{a=b;c=(1,2,"x y");d=#5;e=#T01-02-2024_03:04:05;f=#I[1.2.3.4]:25;g=[aGk=];h=#NULL#;}',
    b'CREATEACCOUNT alice@example.test {Password="p\\"w";RealName="A";}',
    b"RENAMEACCOUNT a INTO b",
    b"SETACCOUNTRIGHTS x (Master,DomainAdmin)",
]


def one(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        value = parse(text)
    except DataFormatError:
        pass
    else:
        assert parse(write(value)) == value
        parse(write(value, answer=True))
    core = CliCore("fuzz.test", "<1@fuzz.test>")
    core.receive(b"USER a\r\n")
    core.receive(b"PASS b\r\n")
    core.login_done(AccountRef("fuzz.test", "a"))
    for line in data.split(b"\n")[:20]:
        if core.state is State.CLOSED:
            break
        action = core.receive(line)
        if isinstance(action, Execute):
            action = core.command_done(None)
        elif isinstance(action, Authenticate):
            action = core.login_done(None)
        assert isinstance(action, Send)


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(3)
        pos = rng.randrange(len(b) + 1)
        if op == 0:
            b[pos:pos] = bytes([rng.randrange(256)])
        elif op == 1 and b:
            del b[min(pos, len(b) - 1)]
        elif b:
            b[min(pos, len(b) - 1)] = rng.choice(b'{}()[]#"\\=;,\n ')
    return bytes(b)


def main() -> None:
    if "-atheris" in sys.argv:
        import atheris  # type: ignore[import-not-found]

        atheris.Setup([a for a in sys.argv if a != "-atheris"], one)
        atheris.Fuzz()
        return
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    rng = random.Random()
    end = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < end:
        base = rng.choice(SEEDS) if rng.random() < 0.7 else rng.randbytes(rng.randrange(64))
        one(mutate(rng, base))
        runs += 1
    print(f"{runs} inputs, no failure")


if __name__ == "__main__":
    main()
