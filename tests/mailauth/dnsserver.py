"""A real DNS server for the tests: dnslib on a loopback address, serving
a zone held in a dict, counting the queries it answers, and never
answering the names in ``slow`` (a DNS timeout)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

TTL = 300


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.slow: set[str] = set()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.counts[(name, qtype)] += 1
            values = list(self.records.get((name, qtype), []))
            known = any(n == name for n, _ in self.records)
        if name in self.slow:
            time.sleep(3.0)  # longer than the server's dns_timeout: no answer in time
            return reply
        for value in values:
            if qtype == "TXT":
                chunks = [value[i:i + 250] for i in range(0, len(value), 250)] or [""]
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=TTL))
            else:
                reply.add_answer(*RR.fromZone(f"{name}. {TTL} IN {qtype} {value}"))
        if not values and not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class DnsServer:
    def __init__(self) -> None:
        self.zone = ZoneResolver()
        self.host = "127.0.0.1"
        logger = DNSLogger(log="-recv,-send,-request,-reply,-truncated,-error,-data", prefix=False)
        for _ in range(20):
            self.port = random.randrange(20000, 60000)
            try:
                self.udp = DNSServer(self.zone, address=self.host, port=self.port, logger=logger)
                self.tcp = DNSServer(self.zone, address=self.host, port=self.port, tcp=True, logger=logger)
                break
            except OSError:
                continue
        self.udp.start_thread()
        self.tcp.start_thread()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def add(self, name: str, qtype: str, *values: str) -> None:
        with self.zone.lock:
            self.zone.records.setdefault((name.lower(), qtype), []).extend(values)

    def count(self, name: str, qtype: str) -> int:
        with self.zone.lock:
            return self.zone.counts[(name.lower(), qtype)]

    def stop(self) -> None:
        self.udp.stop()
        self.tcp.stop()
