"""``hostnames.json``: the host names the daemon last routed, for the hosts file's block.

The daemon (``taskmuxd.dns.subsystem``) writes it; the privileged half (``taskmuxd.rootwork``)
and ``taskmux dns install`` read it, so it lives in the core that both programs import.
"""

from __future__ import annotations

import json
import logging
import os

from taskmuxctl.core.fsutil import atomic_write
from taskmuxctl.core.system import rootfiles

log = logging.getLogger("taskmuxd.dns")

RECORD_NAME = "hostnames.json"
RECORD_VERSION = 1


def record_path(home: str) -> str:
    return os.path.join(home, RECORD_NAME)


MAX_RECORD_BYTES = 1024 * 1024
MAX_RECORD_NAMES = 4096


def read_record(home: str, owners: tuple[int, ...] | None = None) -> list[str]:
    """The host names the daemon last routed (empty when unknown or unreadable).

    The file is the user's, so it is read as hostile input: a regular file only (no link,
    FIFO or device), at most MAX_RECORD_BYTES, at most MAX_RECORD_NAMES names (the rest are
    dropped, with a warning); ``owners`` (the privileged half passes the user's uid and
    root's) refuses a file of anyone else. The names themselves are checked where they are
    written (:func:`taskmuxctl.core.system.hostsfile.write`).
    """
    path = record_path(home)
    try:
        raw = rootfiles.read_user_file(path, MAX_RECORD_BYTES, owners)
        data = json.loads(raw)
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return []
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        return []
    names = data.get("names")
    if not isinstance(names, list):
        return []
    if len(names) > MAX_RECORD_NAMES:
        log.warning("%s lists %d names; only the first %d are used", path, len(names),
                    MAX_RECORD_NAMES)
        names = names[:MAX_RECORD_NAMES]
    return [n for n in names if isinstance(n, str)]


def write_record(home: str, tld: str, names: list[str]) -> None:
    atomic_write(record_path(home),
                 json.dumps({"version": RECORD_VERSION, "tld": tld, "names": names}) + "\n")
