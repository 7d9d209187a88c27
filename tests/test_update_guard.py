"""The boot-guard under a (stand-in) service manager: a release that cannot import or crashes
on start is switched back and marked bad; auto-update does not flip-flop; a version that ran a
while, a manual restart, are left alone."""

from __future__ import annotations

import os
from typing import Any

import pytest

from taskmuxctl.core.eventlog import read_events
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.update import bootguard
from taskmuxctl.core.update import lock as update_lock
from tests.helpers import call, read, wait_until
from tests.update_fixtures import BASE, CRASHES, GOOD, NEWER, NO_IMPORT, Installed, wait_version

pytestmark = [pytest.mark.timeout(480), pytest.mark.slow(12)]  # minutes of pip on busy cores


def starts(record: str) -> int:
    return len(read(record).splitlines()) if os.path.exists(record) else 0


def status(inst: Installed) -> dict[str, Any]:
    """The updater's section of daemon.status, once the daemon has one: a daemon answers
    before it is READY (its subsystems, the updater among them, not yet up)."""
    def section() -> dict[str, Any] | None:
        answer = call(os.path.join(inst.home, "ctl.sock"), "daemon.status", timeout=5)
        return dict(answer["update"]) if "update" in answer else None
    found: dict[str, Any] = wait_until(section, 30, "the daemon's update section (READY)")
    return found


def event_names(inst: Installed) -> list[str]:
    return [str(e["event"]) for e in read_events(os.path.join(inst.home, "events.jsonl"))]


@pytest.mark.parametrize("bad", [NO_IMPORT, CRASHES], ids=["cannot-import", "crashes-on-start"])
def test_guard_rolls_back_a_release_that_cannot_start(installed: Installed, bad: str) -> None:
    inst = installed
    if bad == CRASHES:  # its install is shared with two other tests (test_update_e2e.py)
        inst.preinstall(bad)
    record = inst.start_service()
    wait_version(inst, BASE)
    inst.publish(bad)
    code, out = inst.ctl_json("update")
    assert code == 1 and out["code"] == Code.UPDATE_ROLLED_BACK, out
    assert "boot-guard switched back" in out["error"]
    # The guard switched back, remembered the version, and the good one runs again.
    assert inst.current() == BASE and inst.versions() == [BASE]
    wait_version(inst, BASE)
    bad_versions = bootguard.bad_versions(inst.app)
    assert list(bad_versions) == [bad] and bad_versions[bad]["by"] == "boot-guard"
    assert "failed to start 3 times" in bad_versions[bad]["reason"]
    assert starts(record) >= 5  # the first start, the bounce, two retries, the revert
    assert "switched back to 1.0.0 and marked" in inst.service_log()
    # The daemon reported what the guard did in the event history.
    wait_until(lambda: "update_guard_reverted" in event_names(inst), 10, "the guard's event")
    assert status(inst)["bad_versions"] == [bad]


@pytest.mark.slow(35)
def test_auto_update_skips_the_bad_release_then_takes_a_newer_one(installed: Installed) -> None:
    inst = installed
    with open(os.path.join(inst.home, "config.toml"), "a") as fh:
        fh.write("auto_update = true\nupdate_check_interval = 1\n")
    inst.preinstall(CRASHES)  # not this test's subject: the daemon's updater reuses it
    inst.publish(CRASHES)
    record = inst.start_service()
    # The daemon updates itself to 1.3.0, which crash-loops until the guard reverts it.
    wait_until(lambda: CRASHES in bootguard.bad_versions(inst.app), 90, "the guard to give up")
    wait_version(inst, BASE)
    lock_file = os.path.join(inst.app, "update.lock")
    wait_until(lambda: update_lock.holder(lock_file) is None, 90, "the updater to finish")
    # Several checks later it is still on 1.0.0 and has not tried 1.3.0 again.
    settled = starts(record)
    checks = status(inst)["checks"]
    wait_until(lambda: status(inst)["checks"] >= checks + 3, 30, "three more checks")
    section = status(inst)
    assert section["current"] == BASE and section["available"] is None
    assert section["last_error"] is None and section["bad_versions"] == [CRASHES]
    assert starts(record) == settled
    assert inst.current() == BASE
    # A newer release is taken.
    inst.publish(NEWER)
    wait_version(inst, NEWER, timeout=90)
    assert inst.current() == NEWER and inst.previous() == BASE
    assert CRASHES in bootguard.bad_versions(inst.app)
    names = event_names(inst)
    assert "update_started" in names and "update_guard_reverted" in names


def test_a_version_that_ran_a_while_is_never_reverted(installed: Installed) -> None:
    inst = installed
    record = inst.start_service("--stable", "1")
    wait_version(inst, BASE)
    inst.publish(GOOD)
    code, out = inst.ctl_json("update")
    assert code == 0 and out["restart"] == "service", out
    wait_version(inst, GOOD)
    run_json = os.path.join(inst.app, "run.json")
    # This version's own run (the file still holds the last one's until the new daemon is
    # READY, and a daemon answers its version before that).
    wait_until(lambda: (run := bootguard.read_json(run_json) or {}).get("version") == GOOD
               and run.get("stable_at"), 20, "the daemon to report a stable run")
    # Now make every start of 1.1.0 fail: the guard, disarmed, keeps starting it anyway.
    daemon = os.path.join(inst.app, "versions", GOOD, "bin", "taskmuxd")
    os.rename(daemon, daemon + ".away")
    try:
        before = starts(record)
        os.kill(inst.daemon_pid() or 0, 9)
        wait_until(lambda: starts(record) >= before + 5, 30, "five failed starts")
        assert inst.current() == GOOD and not bootguard.bad_versions(inst.app)
    finally:
        os.rename(daemon + ".away", daemon)
    wait_version(inst, GOOD)


@pytest.mark.slow(18)
def test_manual_restarts_are_not_crashes(installed: Installed) -> None:
    inst = installed
    inst.preinstall(GOOD)  # not this test's subject: the update reuses it
    inst.start_service()
    wait_version(inst, BASE)
    inst.publish(GOOD)
    assert inst.ctl_json("update")[0] == 0
    # Still armed (it has not run 30 s yet); restart it through the manager four times.
    for _ in range(4):
        pid = inst.daemon_pid()
        call(os.path.join(inst.home, "ctl.sock"), "update.restart")

        def restarted(old: int | None = pid) -> bool:
            return inst.daemon_pid() not in (None, old) and inst.daemon_version() == GOOD

        wait_until(restarted, 30, "the restarted daemon")
    assert inst.daemon_version() == GOOD and inst.current() == GOOD
    rec = bootguard.load_record(inst.app)
    assert rec["armed"]["version"] == GOOD and not rec["bad"]
    assert {a["outcome"] for a in rec["attempts"][:-1]} == {"clean"}


def test_restart_without_a_service_manager_is_refused(installed: Installed) -> None:
    assert installed.ctl("daemon", "start").returncode == 0
    with pytest.raises(RuntimeError, match="709"):
        call(os.path.join(installed.home, "ctl.sock"), "update.restart")
    assert installed.daemon_version() == BASE
