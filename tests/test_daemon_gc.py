"""What a real daemon's own process shows, watched from a thread of its own: the collector is
off while the daemon loads and on again, with the load frozen, once it is READY
(taskmuxd.cli.main, Daemon.run); and a start loads no module that only a rarer path needs."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.helpers import PYTHON, REPO, ensure_safe_config, wait_until

WATCH = r"""
import gc, json, os, sys, threading, time
from tests.helpers import call

out, sock = sys.argv[1], sys.argv[2]
seen = {"on_while_loading": []}

def watch():
    while True:
        try:
            if call(sock, "daemon.status", timeout=1.0)["ready"] is True:
                break
            seen["on_while_loading"].append(gc.isenabled())  # phase one answered
        except (OSError, RuntimeError):
            pass
        time.sleep(0.01)
    seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count(), modules=sorted(sys.modules))
    with open(out + ".tmp", "w") as fh:
        json.dump(seen, fh)
    os.rename(out + ".tmp", out)

from taskmuxd import cli
threading.Thread(target=watch, daemon=True).start()
sys.exit(cli.main(["run"]))
"""


# Loaded by a path a plain start does not take: the dashboard's first connection (h11), an
# env_file (python-dotenv), a DNS server (dnslib), a watched taskmux.toml (watchdog), an
# update check (the release code, the HTTP client), a log file (logging.handlers), an HTML
# error page (html); pydantic's plugin scan (importlib.metadata) and jsonrpcserver's own HTTP
# server (http.server) never.
RARE = ("h11", "dotenv", "dnslib", "watchdog", "taskmuxctl.core.update.release",
        "taskmuxctl.core.update.apply", "http.client", "http.server", "logging.handlers",
        "html", "importlib.metadata", "taskmuxd.dashboard.site")


@pytest.fixture(scope="module")
def seen(module_env: dict[str, str]) -> dict[str, Any]:
    """A daemon with no project, started and watched until READY (one start for the module)."""
    home = module_env["TASKMUX_HOME"]
    ensure_safe_config(home)
    out = os.path.join(home, "gc.json")
    with open(os.path.join(home, "stderr"), "wb") as log:
        proc = subprocess.Popen([PYTHON, "-c", WATCH, out, os.path.join(home, "ctl.sock")],
                                env={**module_env, "PYTHONPATH": REPO},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: os.path.exists(out), what="the daemon READY, seen from inside")
        with open(out) as fh:
            found: dict[str, Any] = json.load(fh)
    finally:
        proc.terminate()
        proc.wait(30)
    return found


def test_the_collector_is_off_while_loading_and_on_once_ready(seen: dict[str, Any]) -> None:
    # Off whenever phase one answered before READY; on at READY, with what the start built
    # frozen out of its way.
    assert not any(seen["on_while_loading"]), seen["on_while_loading"]
    assert seen["enabled"] is True, seen["enabled"]
    assert seen["frozen"] > 10_000, seen["frozen"]


def test_a_start_loads_no_module_of_a_rarer_path(seen: dict[str, Any]) -> None:
    assert "taskmuxd.daemon" in seen["modules"]  # the snapshot is of a started daemon
    assert [name for name in RARE if name in seen["modules"]] == []
