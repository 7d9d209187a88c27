"""The sd_notify protocol as a task speaks it to its runner, without I/O.

A task finds ``NOTIFY_SOCKET`` in its environment and sends datagrams of newline-separated
``KEY=VALUE`` assignments, as it would to systemd. :func:`parse` turns one datagram into its
assignments (bounded: at most ``MAX_DATAGRAM`` bytes, ``MAX_FIELDS`` lines, printable status
text of at most ``MAX_STATUS`` characters). :class:`NotifyState` is what the runner keeps of
them: when the task said ``READY=1``, its last ``STATUS=``, and its watchdog, judged against a
clock passed in (``WATCHDOG=1`` pings; ``watchdog_sec`` without one is a miss;
``WATCHDOG=trigger`` is a miss at once, as under systemd). The watchdog's clock starts when
the task is ready (as systemd's starts once start-up is complete), or at once when the task
does not announce readiness.

Standard library only and cheap to import: every runner imports it.
"""

from __future__ import annotations

MAX_DATAGRAM = 4096  # bytes; systemd's own limit is larger, but nothing useful needs more
MAX_FIELDS = 32
MAX_STATUS = 200  # characters of STATUS= kept
KNOWN = frozenset(("READY", "STATUS", "WATCHDOG", "STOPPING", "RELOADING", "ERRNO",
                   "MAINPID", "EXTEND_TIMEOUT_USEC", "WATCHDOG_USEC"))


def parse(data: bytes) -> dict[str, str]:
    """The assignments of one datagram; garbage yields nothing (an empty dict). Unknown keys
    and malformed lines are skipped; the last assignment of a key wins."""
    if not data or len(data) > MAX_DATAGRAM or b"\0" in data:
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    out: dict[str, str] = {}
    for line in text.split("\n", MAX_FIELDS)[:MAX_FIELDS]:
        key, sep, value = line.partition("=")
        if sep and key in KNOWN:
            out[key] = value
    return out


def clean_status(value: str) -> str:
    """STATUS text fit for one cell of a table: control characters dropped, length capped."""
    text = "".join(ch if ch.isprintable() else " " for ch in value).strip()
    return text[:MAX_STATUS]


class NotifyState:
    """What a task told its runner. ``feed`` and ``check`` return whether anything the daemon
    should hear of changed; times are ``time.monotonic`` values passed in."""

    def __init__(self, watchdog_sec: float | None, wait_ready: bool, now: float) -> None:
        self.watchdog_sec = watchdog_sec if watchdog_sec and watchdog_sec > 0 else None
        self.ready = False
        self.status: str | None = None
        self.missed = False  # the watchdog went unfed (reported once per run)
        self.missed_reason = ""
        # the watchdog's clock: from readiness when the task announces it, else from start
        self.last_ping: float | None = None if wait_ready else now

    def mark_ready(self, now: float) -> bool:
        """The task is ready (by READY=1, or by a matching log line). Whether it is news."""
        if self.ready:
            return False
        self.ready = True
        if self.last_ping is None:
            self.last_ping = now
        return True

    def feed(self, fields: dict[str, str], now: float) -> bool:
        changed = False
        if fields.get("READY") == "1":
            changed |= self.mark_ready(now)
        if "STATUS" in fields:
            status = clean_status(fields["STATUS"])
            if status != self.status:
                self.status = status
                changed = True
        ping = fields.get("WATCHDOG")
        if ping == "1" and self.last_ping is not None:
            self.last_ping = now
        elif ping == "trigger" and not self.missed:
            self.missed, self.missed_reason = True, "the task asked for it (WATCHDOG=trigger)"
            changed = True
        return changed

    def deadline(self) -> float | None:
        """When the watchdog misses if no ping comes first (None: it is not running)."""
        if self.watchdog_sec is None or self.last_ping is None or self.missed:
            return None
        return self.last_ping + self.watchdog_sec

    def check(self, now: float) -> bool:
        """Whether the watchdog has just missed."""
        due = self.deadline()
        if due is None or now < due:
            return False
        self.missed = True
        self.missed_reason = f"no WATCHDOG=1 within watchdog_sec ({self.watchdog_sec:g}s)"
        return True
