"""The one asyncio I/O layer: accept, read, write, timeouts, TLS, limits."""

from dynamail.net.connection import Connection, IdleTimeout, LineTooLong
from dynamail.net.listener import Listeners, ListenerSpec, TlsMode

__all__ = ["Connection", "IdleTimeout", "LineTooLong", "ListenerSpec", "Listeners", "TlsMode"]
