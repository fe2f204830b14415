"""Every buffer, count and time limit of the admin CLI protocol.

The CLI protocol has no RFC; these bounds keep one connection's memory and
CPU small whatever a client sends.  Crossing a limit produces
:class:`LimitExceeded`, which carries the reply line to send; only the
bad-command and bad-login limits end the session.
"""

from __future__ import annotations

from typing import Final

# One command line including its CRLF.  Settings dictionaries arrive inline,
# so this is generous; a longer line is discarded and answered with an error.
MAX_LINE: Final = 256 * 1024
# Whole textual data value (a command's arguments) in characters.
MAX_DATA_SIZE: Final = MAX_LINE
# Arrays and dictionaries nested inside one another.
MAX_DATA_NESTING: Final = 32
# Consecutive unknown or malformed commands before the session is closed.
MAX_BAD_COMMANDS: Final = 20
# Failed logins on one connection before it is closed (the Authenticator
# throttles per address and per account across connections as well).
MAX_BAD_LOGINS: Final = 5
# Seconds without a command before an idle session is closed.
IDLE_TIMEOUT: Final = 300.0
# Seconds allowed to log in after the greeting.
LOGIN_TIMEOUT: Final = 60.0


class LimitExceeded(Exception):
    """A limit was crossed; ``reply`` is the line to send (without CRLF)."""

    def __init__(self, reply: str, *, close: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.close = close
