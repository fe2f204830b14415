"""Every size, count and time of the cluster layer, in one place.

Times are defaults; ``[cluster]`` settings (and tests) shorten them.  The
relations that safety depends on are checked by :func:`check_timing`.
"""

from __future__ import annotations

# -- wire ------------------------------------------------------------------
MAX_HANDSHAKE_FRAME = 1024  # nothing bigger is read before authentication
MAX_FRAME = 64 * 1024 * 1024  # a delivery hand-off carries a whole message
MAX_ARRAY = 1_000_000  # elements in one msgpack array or map (resync of a big member)
NONCE_SIZE = 32

# -- ports -----------------------------------------------------------------
CLUSTER_PORT = 7400  # the member-to-member protocol; plus the server's port offset

# -- timing (seconds) --------------------------------------------------------
CONTROLLER_LEASE = 1.5  # T: an observer declares the Controller dead after its
#                          heartbeat record stayed unchanged this long
CONTROLLER_MARGIN = 0.3  # the Controller stops acting at T - margin after its last renewal
MEMBER_LEASE = 1.5  # a member's grants live this long past its last acknowledged heartbeat
MEMBER_MARGIN = 0.3  # member stops at lease - margin; Controller frees at lease + margin
HEARTBEAT_INTERVAL = 0.25
BACKUP_HEAD_START = 0.5  # non-Backup members wait this much longer before a takeover
IDLE_RELEASE = 60.0  # an account unused this long is closed and released
RELAY_TICKET_VALIDITY = 30.0  # the old, time-stamped ticket form only (relay.py)

# -- relay challenge (challenge.py) ----------------------------------------------
RELAY_NONCE_BYTES = 16  # 128 bits an owner issues per relay connection
RELAY_NONCE_MIN_BYTES = 12  # a relaying member accepts no nonce of fewer than 96 bits
RELAY_NONCE_MAX_BYTES = 64
REQUEST_TIMEOUT = 5.0
CONNECT_TIMEOUT = 1.0


def check_timing(controller_lease: float, controller_margin: float, member_lease: float,
                 member_margin: float, heartbeat: float) -> None:
    """Refuse timings under which the design's safety argument fails."""
    if not 0 < controller_margin < controller_lease / 2:
        raise ValueError("controller margin must be in (0, lease/2)")
    if not 0 < member_margin < member_lease / 2:
        raise ValueError("member margin must be in (0, lease/2)")
    if heartbeat * 3 > member_lease - member_margin:
        raise ValueError("heartbeat interval too long for the member lease")
