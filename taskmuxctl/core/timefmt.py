"""Parsing ``--since`` values and the UTC time stamps taskmux writes."""

from __future__ import annotations

import time

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class TimeError(ValueError):
    pass


def parse_since(text: str, now: float | None = None) -> float:
    """``30s``, ``5m``, ``1h``, ``2d``, ``1w`` ago, or an ISO date/time (UTC unless it says
    otherwise, like the time stamps in logs and events) → seconds since the epoch."""
    now = time.time() if now is None else now
    value = text.strip()
    if value and value[-1] in UNITS and value[:-1].replace(".", "", 1).isdigit():
        return now - float(value[:-1]) * UNITS[value[-1]]
    if value.isdigit():
        return now - float(value)
    from datetime import UTC, datetime

    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TimeError(f"cannot read {text!r} as a time: use 30s, 5m, 1h, 2d or an ISO time "
                        "such as 2026-01-31T14:00 (UTC)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def parse_stamp(stamp: str) -> float | None:
    """``2026-01-31T14:00:00.123Z`` → epoch seconds (None when it is not one)."""
    if len(stamp) < 20 or stamp[4] != "-" or stamp[10] != "T":
        return None
    try:
        base = time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    import calendar

    frac = 0.0
    if len(stamp) > 20 and stamp[19] == ".":
        digits = stamp[20:].rstrip("Z")
        if digits.isdigit():
            frac = int(digits) / (10 ** len(digits))
    return calendar.timegm(base) + frac
