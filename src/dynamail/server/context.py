"""What every protocol adapter is handed: the running server's services.

One ``ServerContext`` exists per server process.  Protocol adapters read
from it and never construct services themselves, so the same adapter code
runs in a standalone server and in a cluster member (where ``accounts`` is
the cluster locator and ``delivery`` hands messages to owning members).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dynamail.admin import Admin
    from dynamail.auth import Authenticator
    from dynamail.cluster.locator import AccountLocator
    from dynamail.delivery import Delivery
    from dynamail.directory import Directory
    from dynamail.metrics import Metrics
    from dynamail.net import Listeners
    from dynamail.server.config import ServerConfig


@dataclass
class ServerContext:
    config: ServerConfig
    hostname: str  # the Main Domain name, used in greetings and Received headers
    directory: Directory  # domains, accounts, settings, rights, alerts
    auth: Authenticator  # password checks, credentials cache, login throttling
    admin: Admin  # every administrative operation, with rights checks
    accounts: AccountLocator  # the cluster layer: where does an account live
    delivery: Delivery  # local delivery (and hand-off to owners in a cluster)
    metrics: Metrics
    listeners: Listeners
    tls: ssl.SSLContext | None = None
    cluster: Any = None  # dynamail.cluster member state when clustered
    extras: dict[str, Any] = field(default_factory=dict)
