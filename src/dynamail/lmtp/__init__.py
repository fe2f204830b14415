"""LMTP (RFC 2033): delivery into this server (or cluster) by another MTA."""
