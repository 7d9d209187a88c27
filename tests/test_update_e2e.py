"""Updates end to end against a stand-in for GitHub Releases, with a real daemon running tasks
in a real tmux server: the good path, rollback and its pin, two updates at once, and a release
that cannot start when no service manager is there to restart it."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import time
from typing import Any

import pytest

from taskmuxctl.core.eventlog import read_events
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.update import bootguard
from taskmuxctl.core.update import lock as update_lock
from tests.fakegithub import Fault
from tests.helpers import call, read, wait_until
from tests.projects import pid_alive, write_project
from tests.update_fixtures import BASE, CRASHES, DIES, GOOD, NEWER, PROBATION, Installed

pytestmark = [pytest.mark.timeout(480), pytest.mark.slow(25)]  # minutes of pip on busy cores


def wheel_downloads(inst: Installed, version: str) -> int:
    return sum(f"taskmux-{version}-py3-none-any.whl" in line for line in inst.gh.log)


def project_task(inst: Installed, proj: str) -> dict[str, Any]:
    code, out = inst.ctl_json_in(proj, "status")
    assert code == 0, out
    [task] = out["tasks"]
    return dict(task)


def events_since(inst: Installed, since: float) -> list[dict[str, Any]]:
    from taskmuxctl.core.timefmt import parse_stamp

    out = []
    for e in read_events(os.path.join(inst.home, "events.jsonl")):
        at = parse_stamp(str(e.get("time", "")))
        if at is not None and at >= since:
            out.append(e)
    return out


@pytest.mark.slow(40)
def test_good_update_end_to_end_tasks_keep_running(installed: Installed, tmp_path: Any) -> None:
    inst = installed
    assert inst.ctl("daemon", "start").returncode == 0
    old_daemon = inst.daemon_pid()
    proj = write_project(str(tmp_path / "proj"), """
        name = "keeper"
        [tasks.sleeper]
        command = "sleep 600"
    """)
    code, out = inst.ctl_json_in(proj, "start")
    assert code == 0, out
    task = wait_until(lambda: (t := project_task(inst, proj))["state"] == "running" and t,
                      20, "the task to run")
    task_pid = task["pid"]
    assert pid_alive(task_pid)
    inst.publish(BASE, latest=False)
    inst.publish(GOOD)
    sock = os.path.join(inst.home, "ctl.sock")
    checked = call(sock, "update.check")  # the daemon's own check (auto rules), no install
    assert (checked["current"], checked["offered"], checked["available"]) == (BASE, GOOD, True)
    assert call(sock, "update.status")["available"] == GOOD
    since = time.time()

    proc = inst.ctl("update")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"updated {BASE} -> {GOOD} in ")
    for step in ("verified 1.1.0: signature", "preflight passed", "switched current: 1.0.0 -> "
                 "1.1.0", "restarting onto 1.1.0 (direct)", "answers as 1.1.0"):
        assert step in proc.stderr, proc.stderr

    # The new daemon answers as the new version; the old one is gone.
    assert inst.daemon_version() == GOOD
    assert inst.daemon_pid() != old_daemon
    assert (inst.current(), inst.previous()) == (GOOD, BASE)
    assert inst.versions() == [BASE, GOOD]
    assert os.listdir(os.path.join(inst.app, "tmp")) == []
    new_guard = os.path.join(inst.app, "versions", GOOD, "lib")
    assert any(filecmp.cmp(os.path.join(inst.app, "bootguard.py"), os.path.join(root, f))
               for root, _, files in os.walk(new_guard) for f in files if f == "bootguard.py")
    state = json.loads(read(os.path.join(inst.app, "update.json")))
    assert state["last"]["outcome"] == "updated" and state["pinned"] is None
    assert bootguard.load_record(inst.app)["armed"]["version"] == GOOD  # until it runs a while

    # The task never noticed: same pid, still running, never restarted.
    task = project_task(inst, proj)
    assert task["pid"] == task_pid and task["state"] == "running"
    assert pid_alive(task_pid)
    seen = [e["event"] for e in events_since(inst, since)]
    assert not {"task_started", "task_restarted", "task_stopped", "task_exited"} & set(seen)
    for step in ("update_available", "update_verified", "update_switched", "update_done"):
        assert step in seen, seen

    # daemon.status reports the update section.
    section = call(sock, "daemon.status")["update"]
    assert set(section) >= {"auto_update", "current", "previous", "pinned", "bad_versions",
                            "last_check", "last_error", "summary"}
    assert (section["current"], section["previous"], section["pinned"]) == (GOOD, BASE, None)
    assert section["auto_update"] is False and section["bad_versions"] == []

    # The next update keeps only current and previous.
    inst.publish(NEWER)
    assert inst.ctl("update").returncode == 0
    assert inst.daemon_version() == NEWER
    assert inst.versions() == [GOOD, NEWER]
    assert os.path.isdir(inst.builds.base_venv)  # a linked version is unlinked, not deleted
    assert project_task(inst, proj)["pid"] == task_pid
    # Up to date now: nothing to do, exit 0.
    code, out = inst.ctl_json("update")
    assert code == 0 and out["action"] == "none"


def test_rollback_and_its_pin(installed: Installed) -> None:
    inst = installed
    code, out = inst.ctl_json("update", "--rollback")
    assert code == 1 and out["code"] == Code.UPDATE_NO_PREVIOUS
    assert inst.ctl("daemon", "start").returncode == 0
    inst.preinstall(GOOD)  # the install is not this test's subject: the update reuses it
    inst.publish(GOOD)
    assert inst.ctl("update").returncode == 0
    assert inst.daemon_version() == GOOD

    code, out = inst.ctl_json("update", "--rollback")
    assert code == 0, out
    assert (out["from"], out["to"], out["pinned"]) == (GOOD, BASE, BASE)
    assert inst.daemon_version() == BASE
    assert (inst.current(), inst.previous()) == (BASE, GOOD)
    # Auto-update leaves a pinned machine alone...
    code, out = inst.ctl_json("update", "--auto")
    assert code == 0 and out["action"] == "none" and "pinned to 1.0.0" in out["reason"]
    assert inst.current() == BASE
    code, out = inst.ctl_json("update", "--check")
    assert code == 10 and out["pinned"] == BASE  # an explicit update would move
    # ...until the user updates explicitly; the version still installed is reused.
    downloads = wheel_downloads(inst, GOOD)
    code, out = inst.ctl_json("update")
    assert code == 0 and out["action"] == "updated", out
    assert inst.daemon_version() == GOOD
    assert wheel_downloads(inst, GOOD) == downloads
    assert json.loads(read(os.path.join(inst.app, "update.json")))["pinned"] is None


def test_two_updates_at_once(installed: Installed) -> None:
    inst = installed
    inst.publish(GOOD)
    inst.gh.faults[f"taskmux-{GOOD}-py3-none-any.whl"] = Fault(delay=1.5)
    first = subprocess.Popen(
        [os.path.join(inst.app, "current", "bin", "taskmuxctl"), "--json", "update"],
        env=inst.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock_file = os.path.join(inst.app, "update.lock")
        holder = wait_until(lambda: update_lock.holder(lock_file), 30, "the first update's lock")
        assert holder == first.pid
        code, out = inst.ctl_json("update")
        assert code == 1 and out["code"] == Code.UPDATE_BUSY
        assert f"pid {first.pid}" in out["error"]
        code, out = inst.ctl_json("update", "--rollback")
        assert code == 1 and out["code"] == Code.UPDATE_BUSY
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert json.loads(stdout)["to"] == GOOD
    assert inst.current() == GOOD and inst.versions() == [BASE, GOOD]


def test_release_that_cannot_start_is_rolled_back_without_a_service_manager(
        installed: Installed) -> None:
    inst = installed
    assert inst.ctl("daemon", "start").returncode == 0
    inst.preinstall(CRASHES)  # the install is not this test's subject: the update reuses it
    inst.publish(CRASHES)
    code, out = inst.ctl_json("update")
    assert code == 1 and out["code"] == Code.UPDATE_ROLLED_BACK, out
    assert "1.3.0 is marked bad" in out["error"]
    assert inst.daemon_version() == BASE  # started again
    assert inst.current() == BASE and inst.versions() == [BASE]
    bad = bootguard.bad_versions(inst.app)
    assert list(bad) == [CRASHES] and bad[CRASHES]["by"] == "update"
    # Auto-update skips it; an explicit update refuses it unless asked by name.
    code, out = inst.ctl_json("update", "--auto")
    assert code == 0 and out["action"] == "none" and "rolled back" in out["reason"]
    code, out = inst.ctl_json("update")
    assert code == 1 and out["code"] == Code.UPDATE_REFUSED and "--to 1.3.0" in out["error"]
    code, out = inst.ctl_json("update", "--check")
    assert code == 0 and out["available"] is False


@pytest.mark.slow(30)
def test_release_that_answers_then_dies_is_rolled_back_without_a_service_manager(
        installed: Installed) -> None:
    """Started directly, nothing would restart a daemon that dies after READY, nor let the
    boot-guard judge it: the update watches it for ``update_probation`` seconds instead."""
    inst = installed
    config = os.path.join(inst.home, "config.toml")
    text = read(config).replace(f"update_probation = {PROBATION}\n", "update_probation = 8\n")
    with open(config, "w") as fh:
        fh.write(text)
    assert inst.ctl("daemon", "start").returncode == 0
    inst.publish(DIES)
    started = time.time()
    code, out = inst.ctl_json("update")
    assert code == 1 and out["code"] == Code.UPDATE_ROLLED_BACK, out
    assert "it died within 8s after it started" in out["error"], out
    assert "1.5.0 is marked bad" in out["error"]
    # The previous version runs again (started the same way: detached, through the guard),
    # is current, and stays up.
    assert inst.daemon_version() == BASE and inst.current() == BASE
    pid = inst.daemon_pid()
    assert pid is not None and pid_alive(pid)
    bad = bootguard.bad_versions(inst.app)
    assert list(bad) == [DIES] and bad[DIES]["by"] == "update"
    assert not bootguard.load_record(inst.app)["armed"]
    names = [e["event"] for e in events_since(inst, started)]
    assert "update_probation" in names and "update_rolled_back" in names
    assert "update_done" not in names


@pytest.mark.slow(5)
def test_service_units_start_the_boot_guard(installed: Installed, tmp_path: Any) -> None:
    """In the installed layout the unit runs the guard on the base interpreter (outside every
    version), which execs app/current's taskmuxd with the unit's arguments."""
    env = {**installed.env, "TASKMUX_SERVICE_ROOT": str(tmp_path)}
    proc = installed.ctl("--json", "daemon", "install", "--dry-run", "--user-unit", env=env)
    out = json.loads(proc.stdout)
    guard = os.path.join(installed.app, "bootguard.py")
    assert out["program"] == [installed.builds.python, guard, "--home", installed.home, "--"]
    [unit] = out["content"].values()
    assert f'ExecStart="{installed.builds.python}" "{guard}" "--home" "{installed.home}" "--" ' \
        "run\n" in unit
