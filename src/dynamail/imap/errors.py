"""Failures of a command, each carrying the reply the client gets."""

from __future__ import annotations


class CommandBad(Exception):
    """Answer ``tag BAD text`` (syntax or protocol-state error)."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class CommandNo(Exception):
    """Answer ``tag NO [code] text`` (the command was understood but failed)."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class SessionEnd(Exception):
    """End the session after writing ``* BYE text``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
