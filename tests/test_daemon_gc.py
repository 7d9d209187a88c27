"""The collector is off while the daemon loads and on again, with the load frozen, once it is
READY (taskmuxd.cli.main, Daemon.run): a real daemon, watched from a thread of its own process."""

from __future__ import annotations

import json
import os
import subprocess

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
    seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count())
    with open(out + ".tmp", "w") as fh:
        json.dump(seen, fh)
    os.rename(out + ".tmp", out)

from taskmuxd import cli
threading.Thread(target=watch, daemon=True).start()
sys.exit(cli.main(["run"]))
"""


def test_the_collector_is_off_while_loading_and_on_once_ready(home: str,
                                                               env: dict[str, str]) -> None:
    ensure_safe_config(home)
    out = os.path.join(home, "gc.json")
    with open(os.path.join(home, "stderr"), "wb") as log:
        proc = subprocess.Popen([PYTHON, "-c", WATCH, out, os.path.join(home, "ctl.sock")],
                                env={**env, "PYTHONPATH": REPO},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: os.path.exists(out), what="the daemon READY, seen from inside")
        with open(out) as fh:
            seen = json.load(fh)
    finally:
        proc.terminate()
        proc.wait(30)
    # Off whenever phase one answered before READY; on at READY, with what the start built
    # frozen out of its way.
    assert not any(seen["on_while_loading"]), seen
    assert seen["enabled"] is True, seen
    assert seen["frozen"] > 10_000, seen
