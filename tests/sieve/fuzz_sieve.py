"""Fuzz target for the Sieve parser, checker and interpreter, and the
ManageSieve core.

Run by hand: ``python tests/sieve/fuzz_sieve.py [seconds]``.  With atheris
installed it is coverage-guided (``python tests/sieve/fuzz_sieve.py -atheris``);
otherwise it mutates seed scripts for the given time.  Any exception other
than a :class:`~dynamail.sieve.grammar.SieveError` is a bug, and so is a run
that takes more than its CPU budget.
"""

from __future__ import annotations

import random
import sys
import time

from dynamail.managesieve.core import (
    NEED_DATA,
    PAUSED,
    Closing,
    Login,
    ManageSieveConfig,
    ManageSieveServer,
    ScriptOp,
    StartTls,
)
from dynamail.sieve.actions import Envelope
from dynamail.sieve.commands import compile_script
from dynamail.sieve.grammar import SieveError
from dynamail.sieve.interpreter import run
from dynamail.sieve.match import Budget

SEEDS = [
    b'require ["fileinto", "variables", "imap4flags", "relational", "comparator-i;ascii-numeric"];\n'
    b'if header :matches "subject" "*[*]*" { set :lower "t" "${2}"; fileinto "L/${t}"; addflag "\\\\Seen"; }\n'
    b'elsif header :value "ge" :comparator "i;ascii-numeric" "x-score" "5" { discard; stop; }\n',
    b'require ["body", "date", "editheader", "vacation", "copy", "envelope", "mailbox"];\n'
    b'if body :content "text" :contains "x" { addheader "X-A" "b"; deleteheader :index 1 "received"; }\n'
    b'if date :zone "+0100" "date" "weekday" "0" { vacation :days 2 :subject "a" "b"; }\n'
    b'if envelope :domain :is "from" "x.example" { redirect :copy "a@b.example"; fileinto :create "N"; }\n',
    b"reject text:\nline\n..dot\n.\n;",
    b'require ["include", "variables", "duplicate", "environment", "spamtest", "subaddress", "encoded-character"];\n'
    b'global "g"; include :once :optional "x"; if duplicate :last :seconds 5 { return; }\n'
    b'if environment :matches "host" "*" { set "g" "${1}${hex:41}"; }\n'
    b'if anyof (spamtest "0", address :detail "to" "w") { stop; }\n',
    b'PUTSCRIPT "a" {10+}\r\nkeep;\r\n\r\nLISTSCRIPTS\r\nAUTHENTICATE "PLAIN" "AGEAYg=="\r\n',
]
MESSAGE = (b"From: A <a@x.example>\r\nTo: b@y.example\r\nSubject: [list] hi\r\nX-Score: 7\r\n"
           b"Date: Sun, 6 Dec 2026 10:00:00 +0000\r\nReceived: x\r\n\r\nbody x\r\n")


def one(data: bytes) -> None:
    try:
        script = compile_script(data)
    except SieveError:
        pass
    else:
        start = time.thread_time()
        try:
            run(script, MESSAGE, Envelope("a@x.example", "b@y.example"), budget=Budget())
        except SieveError:
            pass
        assert time.thread_time() - start < 5.0, "a run exceeded its CPU budget"
    core = ManageSieveServer(ManageSieveConfig("fuzz.example", tls_active=True, relay_command=True))
    core.greeting()
    core.receive_data(data)
    core.receive_data(b"")
    for _ in range(200):
        ev = core.next_event()
        if ev is NEED_DATA or ev is PAUSED or isinstance(ev, Closing):
            break
        if isinstance(ev, Login):
            core.login_succeeded("u")
        elif isinstance(ev, ScriptOp):
            core.op_done([("a", True)] if ev.op == "list" else "keep;" if ev.op == "get" else None)
        elif isinstance(ev, StartTls):
            core.tls_started()
        else:
            break
    core.data_to_send()


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
            b[min(pos, len(b) - 1)] = rng.choice(b'{}()[]:;,"\\*?$\n .')
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
        base = rng.choice(SEEDS) if rng.random() < 0.8 else rng.randbytes(rng.randrange(64))
        one(mutate(rng, base))
        runs += 1
    print(f"{runs} inputs, no failure")


if __name__ == "__main__":
    main()
