"""daemon install/uninstall and daemon start|stop|restart|status through a service manager,
driven against fake systemctl/launchctl scripts that record their calls and really run the
daemon the installed files name."""

from __future__ import annotations

import os
import plistlib
import tempfile
from collections.abc import Iterator

import pytest

from taskmuxctl.core.protocol import Code
from tests.helpers import call, pid_gone, read, run_cli, run_json, write_config
from tests.service_fakes import FakeManager, make_fake_manager

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the system scope needs root")

UNIT = "taskmuxd@root.service"
LABEL = "dev.taskmux.taskmuxd.root"


@pytest.fixture
def fake(env: dict[str, str]) -> Iterator[FakeManager]:
    base = tempfile.mkdtemp(prefix="tmxsvc-", dir="/tmp")
    yield make_fake_manager(base, env)
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def systemd_files(fake: FakeManager) -> tuple[str, str]:
    unit_dir = fake.root + "/etc/systemd/system"
    return f"{unit_dir}/taskmuxd@.service", f"{unit_dir}/{UNIT}.d/taskmux.conf"


def test_systemd_install_converges(fake: FakeManager, home: str) -> None:
    code, out = run_json(["daemon", "install"], fake.env)
    assert code == 0, out
    assert (out["unit"], out["scope"], out["user"], out["changed"]) == (UNIT, "system", "root",
                                                                        True)
    assert fake.changes() == ["systemctl daemon-reload", f"systemctl enable {UNIT}",
                              f"systemctl start {UNIT}"]
    template, drop_in = systemd_files(fake)
    assert "ExecStart=" in read(template) and "run --user %i" in read(template)
    assert f'Environment="TASKMUX_HOME={home}"' in read(drop_in)
    pid = out["pid"]
    assert call(os.path.join(home, "ctl.sock"), "daemon.status")["pid"] == pid
    assert os.path.exists(os.path.join(home, "service.json"))
    inodes = [os.stat(p).st_ino for p in (template, drop_in)]

    # Again: nothing to do, and it says so.
    fake.reset_calls()
    proc = run_cli(["daemon", "install"], fake.env)
    assert proc.returncode == 0, proc.stderr
    assert "nothing changed" in proc.stdout
    assert fake.changes() == []
    assert [os.stat(p).st_ino for p in (template, drop_in)] == inodes
    code, out = run_json(["daemon", "install"], fake.env)
    assert (out["changed"], out["actions"], out["pid"]) == (False, [], pid)

    # A template that differs (an older taskmux wrote it): rewritten, reloaded, restarted.
    with open(template, "a") as fh:
        fh.write("# edited\n")
    fake.reset_calls()
    code, out = run_json(["daemon", "install"], fake.env)
    assert code == 0, out
    assert fake.changes() == ["systemctl daemon-reload", f"systemctl restart {UNIT}"]
    assert out["changed"] is True and out["pid"] != pid
    assert "# edited" not in read(template)
    assert pid_gone(pid)


def test_systemd_control_and_status(fake: FakeManager, home: str) -> None:
    code, out = run_json(["daemon", "install"], fake.env)
    assert code == 0, out
    first = out["pid"]

    code, out = run_json(["daemon", "status"], fake.env)
    assert code == 0
    service = out["service"]
    assert (service["unit"], service["active"], service["enabled"], service["main_pid"]) == \
        (UNIT, True, True, first)
    assert service["restarts"] == 0
    text = run_cli(["daemon", "status"], fake.env).stdout
    assert f"service:  {UNIT} (systemd): active (running), enabled, pid {first}" in text

    fake.reset_calls()
    code, out = run_json(["daemon", "stop"], fake.env)
    assert (code, out["action"], out["via"]) == (0, "stopped", "systemd")
    assert fake.changes() == [f"systemctl stop {UNIT}"]
    assert pid_gone(first)
    code, out = run_json(["daemon", "status"], fake.env)
    assert code == 3 and out["service"]["active"] is False
    assert "service:" in run_cli(["daemon", "status"], fake.env).stdout

    fake.reset_calls()
    code, out = run_json(["daemon", "start"], fake.env)
    assert (code, out["action"]) == (0, "started")
    assert fake.changes() == [f"systemctl start {UNIT}"]
    second = out["pid"]
    code, out = run_json(["daemon", "restart"], fake.env)
    assert code == 0 and out["previous_pid"] == second and out["pid"] != second
    assert fake.changes()[-1] == f"systemctl restart {UNIT}"
    third = out["pid"]
    run_json(["daemon", "uninstall"], fake.env)
    assert pid_gone(third)


def test_systemd_uninstall_keeps_state_and_shared_template(fake: FakeManager, home: str
                                                           ) -> None:
    code, out = run_json(["daemon", "install"], fake.env)
    assert code == 0, out
    pid = out["pid"]
    # Another user's instance shares the template: uninstall keeps it for them.
    template, drop_in = systemd_files(fake)
    other = os.path.join(os.path.dirname(template), "taskmuxd@alice.service.d")
    os.makedirs(other)
    with open(os.path.join(other, "taskmux.conf"), "w") as fh:
        fh.write("[Service]\n")
    write_config(home, 'log_level = "info"\n')
    fake.reset_calls()
    code, out = run_json(["daemon", "uninstall"], fake.env)
    assert code == 0, out
    assert fake.changes() == [f"systemctl disable --now {UNIT}", "systemctl daemon-reload",
                              f"systemctl reset-failed {UNIT}"]
    assert out["removed"] == [drop_in] and out["kept"] == [template]
    assert out["other_instances"] == ["taskmuxd@alice.service"]
    assert not os.path.exists(os.path.dirname(drop_in))
    assert not os.path.exists(os.path.join(home, "service.json"))
    assert os.path.exists(os.path.join(home, "config.toml"))  # the user's state stays
    assert pid_gone(pid)
    code, out = run_json(["daemon", "status"], fake.env)
    assert code == 3 and "service" not in out
    # Uninstalling again has nothing to do; the template goes with the last instance.
    proc = run_cli(["daemon", "uninstall"], fake.env)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout
    os.unlink(os.path.join(other, "taskmux.conf"))
    os.makedirs(os.path.dirname(drop_in))
    with open(drop_in, "w") as fh:
        fh.write("[Service]\n")
    code, out = run_json(["daemon", "uninstall"], fake.env)
    assert code == 0 and sorted(out["removed"]) == sorted([template, drop_in])


def test_install_takes_over_from_a_daemon_started_by_hand(fake: FakeManager, home: str
                                                          ) -> None:
    code, out = run_json(["daemon", "start"], fake.env)
    assert code == 0 and out["action"] == "started"
    by_hand = out["pid"]
    code, out = run_json(["daemon", "install"], fake.env)
    assert code == 0, out
    assert out["pid"] != by_hand and pid_gone(by_hand)
    assert any(f"stopped the daemon started outside the service (pid {by_hand}" in a
               for a in out["actions"])


def test_a_daemon_that_cannot_start_is_reported_with_its_exit(fake: FakeManager,
                                                              home: str) -> None:
    with open(os.path.join(home, "config.toml"), "w") as fh:
        fh.write("log_levle = 'debug'\n")
    code, out = run_json(["daemon", "install"], fake.env)
    assert code == 1
    assert out["code"] == Code.SERVICE_FAILED
    assert "exited 78 (invalid settings" in out["error"]
    assert f"journalctl -u {UNIT}" in out["error"]


def test_manager_refusal_says_what_to_do(fake: FakeManager) -> None:
    env = {**fake.env, "FAKE_FAIL": "daemon-reload"}
    code, out = run_json(["daemon", "install"], env)
    assert code == 1 and out["code"] == Code.SERVICE_FAILED
    assert "Access denied" in out["error"] and "sudo systemctl daemon-reload" in out["error"]


def test_dry_run_changes_nothing(fake: FakeManager, home: str) -> None:
    code, out = run_json(["daemon", "install", "--dry-run"], fake.env)
    assert code == 0 and out["dry_run"] is True
    template, _drop_in = systemd_files(fake)
    assert [f["action"] for f in out["files"]] == ["create", "create"]
    assert "Type=notify" in out["content"][template]
    assert not os.path.exists(template) and fake.calls() == []
    proc = run_cli(["daemon", "install", "--dry-run"], fake.env)
    assert proc.returncode == 0 and "would create" in proc.stdout


def test_user_unit_install(fake: FakeManager, home: str) -> None:
    code, out = run_json(["daemon", "install", "--user-unit"], fake.env)
    assert code == 0, out
    assert (out["unit"], out["scope"]) == ("taskmuxd.service", "user")
    assert fake.changes() == ["systemctl --user daemon-reload",
                              "systemctl --user enable taskmuxd.service",
                              "systemctl --user start taskmuxd.service"]
    unit = fake.root + os.path.join(fake.env["XDG_CONFIG_HOME"], "systemd/user/taskmuxd.service")
    assert "--user" not in read(unit).split("ExecStart=")[1].split("\n")[0]
    assert any("loginctl enable-linger root" in w for w in out["warnings"])
    code, out = run_json(["daemon", "install", "--system", "--user-unit"], fake.env)
    assert code == 2 and out["code"] == Code.USAGE
    code, out = run_json(["daemon", "uninstall"], fake.env)  # the record says: user unit
    assert code == 0 and out["removed"] == [unit]


@pytest.mark.slow(20)
def test_launchd_daemon_install_converges_and_is_controlled(fake: FakeManager, home: str
                                                            ) -> None:
    env = {**fake.env, "TASKMUX_SERVICE_MANAGER": "launchd"}
    plist = fake.root + f"/Library/LaunchDaemons/{LABEL}.plist"
    code, out = run_json(["daemon", "install"], env)
    assert code == 0, out
    assert fake.changes() == [f"launchctl bootstrap system {plist}"]
    with open(plist, "rb") as fh:
        job = plistlib.load(fh)
    assert job["Label"] == LABEL and job["ProgramArguments"][-3:] == ["run", "--user", "root"]
    assert os.path.isdir(fake.root + "/Library/Logs/taskmux")
    first = out["pid"]

    fake.reset_calls()
    code, out = run_json(["daemon", "install"], env)
    assert (code, out["changed"], out["pid"]) == (0, False, first)
    assert fake.changes() == []

    with open(plist, "a") as fh:
        fh.write("<!-- edited -->\n")
    code, out = run_json(["daemon", "install"], env)
    assert code == 0 and out["pid"] != first
    assert fake.changes() == [f"launchctl bootout system/{LABEL}",
                              f"launchctl bootstrap system {plist}"]

    fake.reset_calls()
    code, out = run_json(["daemon", "stop"], env)
    assert (code, out["action"]) == (0, "stopped")
    code, out = run_json(["daemon", "start"], env)
    assert (code, out["action"]) == (0, "started")
    code, out = run_json(["daemon", "restart"], env)
    assert code == 0 and out["pid"] != out["previous_pid"]
    assert fake.changes() == [f"launchctl bootout system/{LABEL}",
                              f"launchctl bootstrap system {plist}",
                              f"launchctl kickstart -k system/{LABEL}"]
    code, out = run_json(["daemon", "status"], env)
    assert code == 0
    assert (out["service"]["state"], out["service"]["enabled"]) == ("running", True)
    assert out["service"]["main_pid"] == out["pid"]

    fake.reset_calls()
    code, out = run_json(["daemon", "uninstall"], env)
    assert code == 0 and out["removed"] == [plist]
    assert fake.changes() == [f"launchctl bootout system/{LABEL}"]


def test_launchd_agent_install(fake: FakeManager, home: str) -> None:
    env = {**fake.env, "TASKMUX_SERVICE_MANAGER": "launchd"}
    code, out = run_json(["daemon", "install", "--user-unit"], env)
    assert code == 0, out
    assert out["unit"] == "dev.taskmux.taskmuxd"
    plist = fake.root + "/root/Library/LaunchAgents/dev.taskmux.taskmuxd.plist"
    assert fake.changes() == [f"launchctl bootstrap gui/0 {plist}"]
    with open(plist, "rb") as fh:
        assert plistlib.load(fh)["ProgramArguments"][-1] == "run"


def test_a_second_kind_of_service_is_refused(fake: FakeManager, home: str) -> None:
    code, out = run_json(["daemon", "install"], fake.env)
    assert code == 0, out
    fake.reset_calls()
    code, out = run_json(["daemon", "install", "--user-unit"], fake.env)
    assert code == 1 and out["code"] == Code.SERVICE_UNAVAILABLE
    assert f"{UNIT} (systemd, system) already runs the daemon" in out["error"]
    assert "daemon uninstall --system" in out["error"]
    assert fake.changes() == []
