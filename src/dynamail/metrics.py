"""Prometheus metrics of one server process.

Each process has its own registry (tests start several servers in one
process).  Protocol adapters count sessions, commands and deliveries here;
``/metrics`` on the HTTP port exposes the registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("dynamail_open_sessions", "Open client sessions", ["protocol"], registry=r)
        self.sessions_total = Counter(
            "dynamail_sessions_total", "Client sessions accepted", ["protocol"], registry=r
        )
        self.commands = Counter(
            "dynamail_commands_total", "Protocol commands executed", ["protocol", "command"], registry=r
        )
        self.logins = Counter(
            "dynamail_logins_total", "Login attempts", ["protocol", "result"], registry=r
        )
        self.auth_checks = Counter(
            "dynamail_auth_checks_total",
            "Accepted passwords by what decided: memory cache, keyed verifier, or a hash verification",
            ["how"], registry=r,
        )
        self.deliveries = Counter(
            "dynamail_deliveries_total", "Message deliveries", ["result"], registry=r
        )
        self.queue_size = Gauge("dynamail_queue_messages", "Messages in the outbound queue", registry=r)
        self.storage_latency = Histogram(
            "dynamail_storage_seconds", "Storage operation latency", ["op"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.open_accounts = Gauge("dynamail_open_accounts", "Accounts open on this server", registry=r)
        self.cluster_role = Gauge(
            "dynamail_cluster_role", "1 for the role this member has now", ["role"], registry=r
        )
        self.cluster_ready = Gauge("dynamail_cluster_ready", "1 when this member is Ready", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
