"""What a runner learns from its task about readiness: ``ready_log_line`` matches and
sd_notify messages, kept in the runner's record.

The runner owns this for one run, so it survives the daemon: a daemon that restarts (or was
down when the line was printed) reads the facts back from the runner's record when it adopts
the task. The record gains ``ready_at`` (wall clock) and ``ready_by`` (``"log"`` or
``"notify"``), ``notify_status`` (the last ``STATUS=``) and ``watchdog_missed_at`` with
``watchdog_reason``. The runner rewrites its record and tells the daemon (``runner.notify``)
when readiness or the watchdog changes, at once, and when only the status text changed, at
most every ``STATUS_EVERY`` seconds. It decides nothing: the daemon judges.

Standard library only (the runner imports it); ``re`` is imported only for a task with a
``ready_log_line``.
"""

from __future__ import annotations

import posix as os  # not os: the runner imports this (see runpath)
import time

from taskmuxd import notifysocket, proctree
from taskmuxd.notifyproto import NotifyState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from taskmuxd.readyline import LineMatcher
    from taskmuxd.runrecord import RunRecord, RunSpec

STATUS_EVERY = 1.0  # seconds between reports of status text alone
REFUSAL_NOTE_EVERY = 60.0  # seconds between log notes about refused datagrams


class RunReadiness:
    def __init__(self, spec: RunSpec, record: RunRecord, note: Callable[[str], None]) -> None:
        self.record = record
        self.note = note
        self.socket_path = spec.notify_socket or None
        self.watchdog_sec = spec.watchdog_sec or None
        pattern = spec.ready_log_line
        self.matcher: LineMatcher | None = None
        if pattern:
            from taskmuxd.readyline import LineMatcher

            self.matcher = LineMatcher(pattern)
        wait_ready = bool(self.matcher) or spec.ready == "notify"
        self.state = NotifyState(self.watchdog_sec, wait_ready, time.monotonic())
        self.receiver: notifysocket.Receiver | None = None
        self.root = os.getpid()
        self.urgent = False  # a change to report now
        self.status_due: float | None = None  # status text to report at this time
        self.last_refusal_note = -REFUSAL_NOTE_EVERY
        self.refusals_noted = 0

    def open(self, env: dict[str, str]) -> None:
        """Bind the task's NOTIFY_SOCKET and name it in ``env`` (left out when it cannot be
        bound: the task then runs without one, and the log says why)."""
        if not self.socket_path:
            self.state.watchdog_sec = None  # no socket (its path would be too long)
        else:
            try:
                sock = notifysocket.bind(self.socket_path)
            except OSError as exc:
                self.note(f"no NOTIFY_SOCKET for this run: cannot bind {self.socket_path}: "
                          f"{exc.strerror or exc}")
                self.state.watchdog_sec = None  # it could never be fed
            else:
                self.receiver = notifysocket.Receiver(sock, self._allowed)
                env["NOTIFY_SOCKET"] = self.socket_path
        if self.state.watchdog_sec:
            env["WATCHDOG_USEC"] = str(int(self.state.watchdog_sec * 1_000_000))

    def begins(self, now: float) -> None:
        """The run begins now, made ready earlier (during a hold): a watchdog that does not
        wait for readiness counts from here."""
        if self.state.last_ping is not None and not self.state.ready:
            self.state.last_ping = now

    def _allowed(self, pid: int) -> bool:
        if not proctree.AVAILABLE:
            return True  # no /proc to prove it: the socket's 0600 mode is the guard
        return notifysocket.in_task_tree(pid, self.root)

    def fileno(self) -> int | None:
        return self.receiver.fileno() if self.receiver is not None else None

    def on_line(self, line: str) -> None:
        if self.matcher is not None and self.matcher.feed(line) \
                and self.state.mark_ready(time.monotonic()):
            self._ready("log", f"log line matched: {(self.matcher.matched or '')[:200]}")

    def _ready(self, by: str, detail: str) -> None:
        rec = self.record
        if rec.ready_at is None:
            rec.ready_at, rec.ready_by, rec.ready_detail = time.time(), by, detail
            self.urgent = True

    def readable(self) -> None:
        if self.receiver is None:
            return
        now = time.monotonic()
        was_ready = self.state.ready
        for fields in self.receiver.receive():
            if self.state.feed(fields, now):
                if self.state.ready and not was_ready:
                    was_ready = True
                    self._ready("notify", "the task sent READY=1")
                if self.state.status != self.record.notify_status:
                    self.record.notify_status = self.state.status
                    if self.status_due is None:
                        self.status_due = now + (0 if self.urgent else STATUS_EVERY)
                self._check_missed(now)
        self._note_refusals(now)

    def _note_refusals(self, now: float) -> None:
        r = self.receiver
        if r is None or r.refused == self.refusals_noted:
            return
        if now - self.last_refusal_note >= REFUSAL_NOTE_EVERY:
            self.note(f"NOTIFY_SOCKET: refused {r.refused - self.refusals_noted} datagram(s); "
                      f"the last: {r.last_refusal}")
            self.refusals_noted = r.refused
            self.last_refusal_note = now

    def _check_missed(self, now: float) -> None:
        if self.state.missed and self.record.watchdog_missed_at is None:
            self.record.watchdog_missed_at = time.time()
            self.record.watchdog_reason = self.state.missed_reason
            self.note(f"watchdog: {self.state.missed_reason}")
            self.urgent = True

    def timeout(self, now: float) -> float | None:
        """Seconds until this needs the runner's loop again (None: only on input)."""
        times = [t for t in (self.state.deadline(), self.status_due) if t is not None]
        if self.urgent:
            return 0.0
        return max(min(times) - now, 0.0) if times else None

    def tick(self, now: float) -> bool:
        """Judge the watchdog; whether the record should be written and reported now."""
        if self.state.check(now):
            self._check_missed(now)
        if self.urgent or (self.status_due is not None and now >= self.status_due):
            self.urgent = False
            self.status_due = None
            return True
        return False

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.close(self.socket_path)
            self.receiver = None
