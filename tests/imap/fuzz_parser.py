"""Fuzz target for the IMAP framer and parser.

Run with atheris when it is installed (``python tests/imap/fuzz_parser.py``);
``test_fuzz_target.py`` runs the same function over a seed corpus and random
input in every test run.  Any exception other than ``ParseError`` is a bug.
"""

from __future__ import annotations

import sys

from dynamail.imap.framer import NEED_DATA, Frame, Framer
from dynamail.imap.parser import (
    Args,
    ParseError,
    Token,
    fetch_atts,
    parse_command,
    search_program,
    sequence_set,
    sort_criteria,
)

SEEDS = [
    b"a FETCH 1:*,3 (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)]<0.10> BINARY[1.2])\r\n",
    b"a UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR (FROM {3+}\r\nabc SEEN) NOT 1:3\r\n",
    b"a APPEND INBOX (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {5+}\r\nhello\r\n",
    b"a SORT (REVERSE DATE SUBJECT) UTF-8 UNSEEN\r\n",
    b"a LIST (SUBSCRIBED) \"\" (INBOX %) RETURN (STATUS (MESSAGES))\r\n",
    b"a STORE $ (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Deleted kw)\r\n",
]


def fuzz(data: bytes) -> None:
    framer = Framer(append_limit=4096)
    framer.feed(data)
    while (ev := framer.next_event()) is not NEED_DATA:
        if not isinstance(ev, Frame):
            continue
        try:
            cmd = parse_command(ev.raw)
        except ParseError:
            continue
        _grammar(cmd.args)


def _grammar(args: list[Token]) -> None:
    """Every grammar reader over the arguments; only ParseError may escape."""
    attempts = [
        lambda: search_program(Args(args)),
        lambda: fetch_atts(args[1]) if len(args) > 1 else None,
        lambda: sequence_set(args[0]) if args else None,
        lambda: sort_criteria(args[0]) if args else None,
    ]
    for attempt in attempts:
        try:
            attempt()
        except ParseError:
            pass

if __name__ == "__main__":
    import atheris  # type: ignore[import-not-found]

    atheris.Setup(sys.argv, fuzz)
    atheris.Fuzz()
