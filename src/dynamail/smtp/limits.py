"""Every SMTP size and count limit, with the RFC section that motivates it.

Crossing a limit produces a typed reply (see ``dynamail.smtp.replies``); the
numbers here are defaults that ``[smtp]`` configuration may override.
"""

from __future__ import annotations

from dataclasses import dataclass

#: RFC 5321 4.5.3.1.4: a command line is at most 512 octets; RFC 1870, 3461,
#: 6531 and 4954 extend MAIL/RCPT with parameters, so we allow more.
MAX_COMMAND_LINE = 2048

#: RFC 4954 section 4: an AUTH command line (with initial response) and each
#: SASL response line may be up to 12288 octets.
MAX_AUTH_LINE = 12288

#: RFC 5321 4.5.3.1.6: a text line in DATA is at most 1000 octets with CRLF.
MAX_TEXT_LINE = 1000

#: RFC 5321 4.5.3.1.1/4.5.3.1.2: local-part 64, domain 255; a path 256.
MAX_PATH = 256

#: RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients.
MAX_RECIPIENTS = 100

#: RFC 1870: advertised in EHLO SIZE; DATA beyond it is answered 552.
MAX_MESSAGE_SIZE = 50 * 1024 * 1024

#: Commands accepted since the last message was completed (or since the
#: greeting) before the session is closed with 421: a client that never gets
#: to DATA (address harvesting, RFC 5321 7.8 and 7.9) is cut off.  Leaves
#: room for a full transaction of MAX_RECIPIENTS recipients.
MAX_COMMANDS_WITHOUT_DATA = 200

#: Failed AUTH attempts per session before 421 (RFC 4954 section 4 lets the
#: server close after failures); each failure is also delayed.
MAX_AUTH_FAILURES = 3
AUTH_FAILURE_DELAY = 1.0

#: Concurrent connections from one client address, per listener.
MAX_CONNECTIONS_PER_ADDRESS = 20

#: RFC 5321 4.5.3.2.7: the server timeout waiting for the next command is at
#: least 5 minutes.
IDLE_TIMEOUT = 300.0

#: RFC 3030: the largest BDAT chunk we accept in one command (bounded by SIZE
#: anyway; a bigger chunk is read and discarded).
MAX_BDAT_CHUNK = MAX_MESSAGE_SIZE

#: RFC 6409 8.2/8.3: to add a missing Date or Message-ID on submission the
#: header section must be seen whole.  RFC 5322 sets no limit on its size;
#: this much of a message is held back at most while looking for its end.
MAX_HEADER_SCAN = 256 * 1024

#: Bytes of body handed to the adapter at most per BodyData event.
BODY_EVENT_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    max_message_size: int = MAX_MESSAGE_SIZE
    max_recipients: int = MAX_RECIPIENTS
    max_commands_without_data: int = MAX_COMMANDS_WITHOUT_DATA
    max_auth_failures: int = MAX_AUTH_FAILURES
    max_text_line: int = MAX_TEXT_LINE
    max_command_line: int = MAX_COMMAND_LINE
