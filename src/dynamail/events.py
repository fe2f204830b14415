"""Structured log lines that say what happened: one per client session and
one per message.

Every event is one record of the ``dynamail.events`` logger at INFO:

* ``session``: ``id`` (the session id, also in SMTP replies and
  ``Received:`` fields), ``listener`` (``imap``, ``submission``, ...),
  ``client`` (address:port; the real client behind a cluster relay),
  ``account`` (after a login), ``member`` (this server), ``outcome``
  (``logout``, ``closed``, ``timeout``, ``error``, ``busy``, ``relayed to
  b2``, ...), ``seconds``, and what the protocol adds (``messages``);
* ``message``: ``id`` (``<session>.<n>``, the id the SMTP ``250`` reply and
  the ``Received:`` field name), ``session``, ``member``, ``from``, ``to``
  (the recipients), ``copies`` (where each copy went: ``stored on b2 uid
  17``, ``queued``, ``failed 550``), ``queue`` (the outbound queue id, when
  queued).

With ``log_format = "text"`` (the default) a record is one line
``event key=value ...`` (values with spaces quoted); with ``"json"`` every
log record of the server is one JSON object per line, events with their
fields as keys, so journald, Loki or Elasticsearch can index them.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

log = logging.getLogger("dynamail.events")

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _text(value: Any) -> str:
    if isinstance(value, dict):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text


def emit(event: str, **fields: Any) -> None:
    """Log one event; fields that are None are left out."""
    if not log.isEnabledFor(logging.INFO):
        return
    present = {k: v for k, v in fields.items() if v is not None}
    line = " ".join(f"{k}={_text(v)}" for k, v in present.items())
    log.info("%s %s", event, line, extra={"event": event, "fields": present})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and an
    event's fields (and ``worker``, in a worker of ``serve --workers``)."""

    def __init__(self, worker: str = "") -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if self.worker:
            out["worker"] = self.worker
        event = getattr(record, "event", None)
        if event is not None:
            out["event"] = event
            out.update(getattr(record, "fields", {}))
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str, fmt: str = "text", worker: str = "") -> None:
    """Log to standard error (the journal under systemd) in ``fmt``; the
    lines of a worker of ``serve --workers`` name it (``w2``)."""
    handler = logging.StreamHandler()
    text = TEXT_FORMAT.replace("%(levelname)s", f"[{worker}] %(levelname)s") if worker else TEXT_FORMAT
    handler.setFormatter(JsonFormatter(worker) if fmt == "json" else logging.Formatter(text))
    # like logging.basicConfig: nothing changes when logging is set up already
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
