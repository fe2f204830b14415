"""The content-filter hook: Rspamd's HTTP protocol (``POST /checkv2``).

Before the final answer at the end of DATA on port 25 the SMTP adapter asks
Rspamd about the message (client address, HELO, envelope sender and
recipients as request headers, the message as the body) and acts on the
``action`` of its answer:

==================================  ============================================
Rspamd action                       what we do
==================================  ============================================
``reject``                          ``550 5.7.1`` (Rspamd's SMTP message if any)
``soft reject``, ``greylist``       ``451 4.7.1``: the sender tries again later
``add header``, ``rewrite subject`` accept, ``X-Spam: Yes``, file into Junk
``no action``                       accept, ``X-Spam-Status: No, score=…``
==================================  ============================================

Every accepted message gets ``X-Spam-Status`` (action, score, required
score); ``X-Spam`` and ``X-Spam-Status`` fields that arrive with the message
are removed first, so a sender cannot mark its own mail.  A filter that is
down, slow (``[smtp] filter_timeout``) or answers nonsense fails *open*
(the message is accepted with ``X-Spam-Status: Unknown``) or *closed*
(``451 4.7.1``, the sender keeps the message and retries) per
``[smtp] filter_fail_open``: either way no message is lost.

:func:`interpret` is the sans-IO half (tested on its own); :class:`RspamdFilter`
moves the bytes with aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

__all__ = ["FilterVerdict", "RspamdFilter", "interpret", "remove_fields"]

log = logging.getLogger("dynamail.filter")

MAX_ANSWER = 1024 * 1024  # bytes of Rspamd's JSON answer we read at most
OUR_FIELDS = (b"x-spam", b"x-spam-status")


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    action: str  # "accept" | "junk" | "reject" | "defer"
    fields: bytes = b""  # header fields to add (CRLF-terminated)
    text: str = ""  # the reply text for reject / defer
    score: float | None = None


def _status(answer: dict[str, Any], spam: bool) -> bytes:
    score = answer.get("score")
    required = answer.get("required_score")
    action = str(answer.get("action", "")).replace("\r", " ").replace("\n", " ")[:40]
    text = f"X-Spam-Status: {'Yes' if spam else 'No'}, score={_num(score)} required={_num(required)}"
    text += f" action={action.replace(' ', '_')}\r\n"
    return (b"X-Spam: Yes\r\n" if spam else b"") + text.encode("ascii", "replace")


def _num(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def interpret(answer: Any) -> FilterVerdict | None:
    """What an Rspamd answer means for the message; None when it is not a
    valid answer (treated like an unreachable filter)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("action"), str):
        return None
    action = answer["action"].lower()
    score = answer.get("score")
    score = float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None
    messages = answer.get("messages")
    smtp_message = messages.get("smtp_message") if isinstance(messages, dict) else None
    if action == "reject":
        text = smtp_message if isinstance(smtp_message, str) and smtp_message.isprintable() else "Spam message rejected"
        return FilterVerdict("reject", text=text[:200], score=score)
    if action in ("soft reject", "greylist"):
        return FilterVerdict("defer", text="Try again later", score=score)
    if action in ("add header", "rewrite subject"):
        return FilterVerdict("junk", _status(answer, True), score=score)
    if action == "no action":
        return FilterVerdict("accept", _status(answer, False), score=score)
    return None


def remove_fields(header: bytes, names: Sequence[bytes] = OUR_FIELDS) -> bytes:
    """``header`` without the fields called one of ``names`` (lower case)."""
    out: list[bytes] = []
    skipping = False
    for line in header.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)
            continue
        name, colon, _ = line.partition(b":")
        skipping = bool(colon) and name.strip().lower() in names
        if not skipping:
            out.append(line)
    return b"\n".join(out)


class RspamdFilter:
    """Asks one Rspamd (``[smtp] rspamd_url``) about each message."""

    def __init__(self, url: str, *, timeout: float = 15.0, fail_open: bool = True) -> None:
        self.url = url.rstrip("/") + "/checkv2"
        self.timeout = timeout
        self.fail_open = fail_open
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_context(cls, ctx: Any) -> RspamdFilter | None:
        smtp = ctx.config.smtp
        url = getattr(smtp, "rspamd_url", "")
        if not url:
            return None
        flt: RspamdFilter | None = ctx.extras.get("content_filter")
        if flt is None:
            flt = cls(url, timeout=float(getattr(smtp, "filter_timeout", 15.0)),
                      fail_open=bool(getattr(smtp, "filter_fail_open", True)))
            ctx.extras["content_filter"] = flt
            ctx.extras.setdefault("closers", []).append(flt.close)
        return flt

    async def close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None

    def _unavailable(self, why: str) -> FilterVerdict:
        log.warning("content filter unavailable (%s); failing %s", why, "open" if self.fail_open else "closed")
        if self.fail_open:
            return FilterVerdict("accept", b"X-Spam-Status: Unknown (content filter unavailable)\r\n")
        return FilterVerdict("defer", text="Content filter unavailable; try again later")

    async def scan(self, content: Path | bytes, *, ip: str, helo: str, mail_from: str,
                   rcpts: Sequence[str], queue_id: str) -> FilterVerdict:
        headers: CIMultiDict[str] = CIMultiDict()
        headers["IP"] = ip
        if helo:
            headers["Helo"] = helo
        headers["From"] = mail_from or "<>"
        for r in rcpts:
            headers.add("Rcpt", r)
        headers["Queue-Id"] = queue_id
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.timeout):
                if isinstance(content, bytes):
                    answer = await self._post(headers, content)
                else:
                    with open(content, "rb") as fh:
                        answer = await self._post(headers, fh)
        except TimeoutError:
            return self._unavailable("timeout")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return self._unavailable(str(exc) or type(exc).__name__)
        verdict = interpret(answer)
        return verdict if verdict is not None else self._unavailable("unexpected answer")

    async def _post(self, headers: CIMultiDict[str], body: Any) -> Any:
        assert self._session is not None
        async with self._session.post(self.url, data=body, headers=headers) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            raw = await resp.content.read(MAX_ANSWER + 1)
            if len(raw) > MAX_ANSWER:
                raise ValueError("answer too long")
            return json.loads(raw)
