"""Date parts and zones of the date extension (RFC 5260 4, 5)."""

from __future__ import annotations

import datetime
import email.utils


def parse_zone(text: str) -> datetime.tzinfo | None:
    """RFC 5260 4.1: ``+hhmm`` or ``-hhmm``; None if malformed."""
    text = text.strip()
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        return None
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 23 or minutes > 59:
        return None
    delta = datetime.timedelta(hours=hours, minutes=minutes)
    return datetime.timezone(-delta if text[0] == "-" else delta)


def _zone(when: datetime.datetime) -> str:
    off = when.utcoffset() or datetime.timedelta(0)
    sign = "-" if off < datetime.timedelta(0) else "+"
    minutes = abs(int(off.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def _julian(when: datetime.datetime) -> str:
    # RFC 5260 4.2: the Modified Julian Day (days since 1858-11-17)
    return str((when.date() - datetime.date(1858, 11, 17)).days)


def date_part(when: datetime.datetime, part: str) -> str:
    """The text of one RFC 5260 4.2 date part."""
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
    if part == "julian":
        return _julian(when)
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    if part == "iso8601":
        z = _zone(when)
        return when.strftime("%Y-%m-%dT%H:%M:%S") + z[:3] + ":" + z[3:]
    if part == "std11":
        return email.utils.format_datetime(when)
    if part == "zone":
        return _zone(when)
    if part == "weekday":
        return str((when.weekday() + 1) % 7)  # 0 is Sunday
    raise ValueError(part)
