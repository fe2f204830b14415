"""SMTP replies: a code, an enhanced status code and text (RFC 5321 4.2, RFC 2034/3463)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    status: str  # enhanced status code "x.y.z", or "" where none applies (220, EHLO)
    text: str | tuple[str, ...]

    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    def encode(self) -> bytes:
        lines = self.lines() or ("",)
        out = bytearray()
        for i, line in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            body = f"{self.status} {line}" if self.status else line
            text = f"{self.code}{sep}{body}"
            if self.code != 334:  # RFC 4954 4: an empty challenge is "334 "
                text = text.rstrip(" ")
            out += text.encode("utf-8", "replace") + b"\r\n"
        return bytes(out)

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500


# replies used in several places
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
UNRECOGNIZED = Reply(500, "5.5.2", "Command unrecognized")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (RFC 5321 4.5.3.1)")
TEXT_LINE_TOO_LONG = Reply(500, "5.5.2", "Message line longer than 1000 octets (RFC 5321 4.5.3.1.6)")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
NO_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied")
USER_UNKNOWN = Reply(550, "5.1.1", "User unknown")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing; try again later")
