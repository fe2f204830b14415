"""Sender authentication: DKIM signing of outgoing mail, and SPF, DKIM,
DMARC and ARC checks of incoming mail with an ``Authentication-Results``
field (RFC 8601).  Built on dkimpy, pyspf, dnspython and authres."""
