"""One hook for everything an update does: ``emit(event, **details)``.

Every step is logged through ``logging`` (logger ``taskmux.update``) and handed to each
registered sink. The daemon points a sink at its event log; ``taskmuxctl update`` adds one
that shows progress on a terminal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("taskmux.update")
# Where no logging is set up (the client), stay quiet instead of falling back to printing
# warnings on stderr: the command reports a failure itself, once. The daemon's handlers on
# the root logger still get every record.
log.addHandler(logging.NullHandler())

Sink = Callable[[str, dict[str, Any]], None]
_sinks: list[Sink] = []

ERRORS = ("update_failed", "update_rolled_back", "update_guard_reverted", "update_refused")


def add_sink(sink: Sink) -> None:
    if sink not in _sinks:
        _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def emit(event: str, **details: Any) -> None:
    text = " ".join(f"{k}={v}" for k, v in details.items())
    log.log(logging.WARNING if event in ERRORS else logging.INFO, "%s %s", event, text)
    for sink in list(_sinks):
        try:
            sink(event, details)
        except Exception:
            log.exception("event sink %r failed on %s", sink, event)


def event_log_sink(path: str) -> Sink:
    """A sink appending each event to the event history (``events.jsonl``), for the processes
    that are not the daemon (``taskmuxctl update``, the updater the daemon starts)."""
    from taskmuxctl.core.eventlog import EventLog

    history = EventLog(path)

    def sink(event: str, details: dict[str, Any]) -> None:
        history.emit(event, None, None, **details)

    return sink
