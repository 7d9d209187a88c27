"""The daemon's own log: stderr for a terminal or a service manager, a rotated file detached.

When stderr is the journal (``JOURNAL_STREAM`` names stderr's device and inode) each line
starts with a syslog priority in angle brackets (``<3>``, ``<4>``, ``<6>``, ``<7>``), which
journald turns into the entry's level and strips; the journal adds its own time stamp.
Elsewhere (a terminal, launchd's log file, a process started from a task that merely inherited
the variable) lines carry a UTC time and the level. A detached daemon logs to ``daemon.log``,
rotated by size; its stderr follows the rotation so that a crash's traceback lands in the
current file.
"""

from __future__ import annotations

import logging
import os
import sys
import time

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record).replace("\n", "\n" + f"<{prio}>")
        return f"<{prio}>{text}"


class UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3


def stderr_is_journal(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM to the
    ``device:inode`` of the stream it gave the service)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def configure(level: str = "info", log_file: str | None = None) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler  # one of three kinds
    if log_file:
        from taskmuxd.logfile import RotatingLog  # logging.handlers: only for a log file

        handler = RotatingLog(log_file, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                              encoding="utf-8")
        handler.setFormatter(UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    elif stderr_is_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    set_level(level)
    # No format here names a source line, a thread or a process: skip finding them for each
    # record (the stack walk of ``findCaller`` is most of a record's cost; the logging
    # HOWTO's "Optimization" section names these switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
