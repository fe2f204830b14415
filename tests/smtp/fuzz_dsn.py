"""Fuzz target for the DSN parameter parser (``smtp/dsnparams.py``).

Run by hand with atheris when it is installed (``python tests/smtp/fuzz_dsn.py``);
``test_dsnparams.py`` runs the same function over the seeds and hypothesis
input in every test run.  Any exception other than ``DsnParamError`` is a bug,
and so is an accepted value that is not canonical xtext or decodes to a
control character.
"""

from __future__ import annotations

import sys

from dynamail.smtp.dsnparams import (
    MAX_ENVID,
    MAX_ORCPT,
    DsnParamError,
    check_envid,
    check_orcpt,
    decode_xtext,
    envid_for_report,
    orcpt_for_report,
)

SEEDS = [
    "env1", "env+2B1", "env1\rX-Injected-Envid:yes", "a+0D+0A", "+", "+4", "+4g", "a=b", "x" * 101,
    "rfc822;alice@example.org", "utf-8;j\u00f6rg@example.org", "rfc822;a+2Bb@c", "rfc822", ";x", "x;",
    "rfc822;a\rb", "\u00e9", "+C3+A9",
]


def _canonical(value: str, utf8: bool) -> None:
    for ch in value:
        assert (33 <= ord(ch) <= 126 and ch != "=") or (utf8 and ord(ch) >= 0x80), repr(value)
    text = decode_xtext(value, utf8=utf8)
    assert all(ch.isprintable() for ch in text)


def fuzz_text(value: str) -> None:
    try:
        envid = check_envid(value)
    except DsnParamError:
        assert envid_for_report(value) is None
    else:
        assert len(value) <= MAX_ENVID
        _canonical(envid, False)
        assert check_envid(envid) == envid  # idempotent
        report = envid_for_report(value)
        assert report is not None and "\r" not in report and "\n" not in report
    for utf8 in (False, True):
        try:
            orcpt = check_orcpt(value, utf8=utf8)
        except DsnParamError:
            continue
        assert len(value) <= MAX_ORCPT
        addr_type, semi, address = orcpt.partition(";")
        assert semi and addr_type
        _canonical(address, utf8 and addr_type.lower() == "utf-8")
        assert check_orcpt(orcpt, utf8=utf8) == orcpt
        report = orcpt_for_report(orcpt)
        assert report is not None and all(ch.isprintable() for ch in report)


def fuzz(data: bytes) -> None:
    fuzz_text(data.decode("utf-8", "replace"))


def main() -> None:  # pragma: no cover - by hand
    import atheris  # type: ignore[import-not-found]

    atheris.Setup(sys.argv, fuzz)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()
