"""Every POP3 size and count limit, with the RFC section that motivates it."""

from __future__ import annotations

#: RFC 2449 section 4: a command line is at most 255 octets including CRLF.
MAX_COMMAND_LINE = 255

#: RFC 5034 section 4: the 255-octet limit does not apply to AUTH initial
#: responses and SASL continuation lines; we bound them here.
MAX_SASL_LINE = 8192

#: RFC 1939 section 3: an argument is at most 40 characters.
MAX_ARGUMENT = 40

#: Failed logins per session before the server closes it (RFC 1939 leaves
#: this to the server; RFC 2449 [AUTH] response code explains why).
MAX_AUTH_FAILURES = 3
AUTH_FAILURE_DELAY = 1.0

#: Commands per session in the AUTHORIZATION state (a client that never logs
#: in is closed).
MAX_UNAUTHENTICATED_COMMANDS = 50

#: RFC 1939 section 3: the inactivity autologout timer is at least 10 minutes.
IDLE_TIMEOUT = 600.0

#: Concurrent connections from one client address, per listener.
MAX_CONNECTIONS_PER_ADDRESS = 50

#: Bytes read from storage and dot-stuffed per write when sending a message.
SEND_CHUNK = 64 * 1024
