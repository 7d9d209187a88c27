"""doctor: each check passes and fails on the facts that should decide it; the command
gathers real facts and exits non-zero when any check fails."""

from __future__ import annotations

import dataclasses
import json
import os
import plistlib
import pwd
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskmuxctl.doctor import checks as c
from taskmuxctl.doctor.dnsquery import build_query, parse_answer, query_a
from taskmuxctl.doctor.facts import ABSENT, Facts
from tests.helpers import DaemonProcess, run_cli, run_json
from tests.service_fakes import FakeManager, make_fake_manager
from tests.users import throwaway_user

VERSION = "1.2.3"


def healthy(**changes: Any) -> Facts:
    """Facts of a machine where every check passes; ``changes`` break one thing."""
    f = Facts(
        tmux_path="/usr/bin/tmux", tmux_version="tmux 3.3a",
        python_version=(3, 11, 7), python_executable="/venv/bin/python",
        client_version=VERSION, installed_version=VERSION,
        my_uid=1000, my_user="alice", state_dir="/home/alice/.taskmux", state_exists=True,
        state_is_dir=True, state_uid=1000, state_mode=0o700,
        disk={"path": "/home/alice/.taskmux", "mount": "/home", "free": 50 * 10**9,
              "total": 100 * 10**9, "full": False},
        socket_path="/home/alice/.taskmux/ctl.sock", socket_exists=True,
        socket_is_socket=True, socket_uid=1000, socket_mode=0o600,
        daemon_pid=42, daemon_status={"pid": 42, "version": VERSION},
        service={"manager": "systemd", "scope": "system", "unit": "taskmuxd@alice.service",
                 "user": "alice", "unit_file": "/etc/systemd/system/taskmuxd@.service"},
        service_state={"loaded": True, "active": True, "enabled": True, "state": "active",
                       "main_pid": 42, "restarts": 0, "last_exit": None},
        unit_files={"/etc/systemd/system/taskmuxd@.service": ("unit", "unit")},
        exec_program=["/venv/bin/taskmuxd"], exec_program_ok=True,
        root_program=["/venv/bin/taskmuxd"], root_packages_checked=True,
        proxy={"enabled": True, "bound": True, "https_port": 443, "redirect_port": 80,
               "error": None, "summary": "listening on :443 and :80"},
        dns={"resolver": "/etc/resolver/localhost", "serving": True, "port": 5353,
             "error": None, "summary": "serving on 127.0.0.1:5353"},
        dns_direct=["127.0.0.1"], dns_system=["127.0.0.1", "::1"],
        ca={"path": "/home/alice/.taskmux/ca/ca.pem", "exists": True, "trusted": True,
            "summary": "trusted"},
        browsers=["chromium", "firefox"], chromium_db="/home/alice/.pki/nssdb",
        nss=[{"db": "/home/alice/.pki/nssdb", "trusted": True, "detail": "trusts the CA"},
             {"db": "/home/alice/.mozilla/firefox/x.default", "trusted": True,
              "detail": "trusts the CA"}],
        update={"auto_update": True, "current": VERSION, "previous": "1.2.2", "pinned": None,
                "bad_versions": [], "last_check": 1.0, "last_error": None,
                "summary": f"{VERSION}, up to date"},
    )
    return dataclasses.replace(f, **changes)


def test_a_healthy_machine_passes_every_check() -> None:
    results = c.run_checks(healthy())
    assert [r.name for r in results] == ["tmux", "python", "state", "disk", "socket", "daemon",
                                         "service", "service-files", "service-code", "proxy",
                                         "dns", "ca", "browsers", "update"]
    assert {r.name: r.status for r in results if r.status != c.OK} == {}


Case = tuple[Callable[[Facts], c.Check], dict[str, Any], str, str]
DOWN = {"daemon_status": None, "daemon_error": "not running"}
FAILING: list[Case] = [
    (c.check_tmux, {"tmux_path": None}, c.FAIL, "install tmux"),
    (c.check_tmux, {"tmux_version": "tmux 3.1c"}, c.FAIL, "3.2a or newer"),
    (c.check_tmux, {"tmux_version": "tmux 3.2"}, c.FAIL, "3.2a or newer"),
    (c.check_tmux, {"tmux_version": None, "tmux_error": "boom"}, c.FAIL, "install tmux"),
    (c.check_tmux, {"tmux_version": "tmux ???"}, c.WARN, "install tmux"),
    (c.check_python, {"python_version": (3, 10, 1)}, c.FAIL, "3.11"),
    (c.check_python, {"installed_version": "1.0.0"}, c.WARN, "reinstall"),
    (c.check_state_dir, {"state_uid": 0}, c.FAIL, "chown -R alice"),
    (c.check_state_dir, {"state_mode": 0o755}, c.FAIL, "chmod 700"),
    (c.check_state_dir, {"foreign_entries": ["registry.json"]}, c.FAIL, "chown -R alice"),
    (c.check_state_dir, {"state_is_dir": False}, c.FAIL, "TASKMUX_HOME"),
    (c.check_state_dir, {"state_exists": False}, c.WARN, "daemon start"),
    (c.check_disk, {"disk": {"path": "/h", "mount": "/home", "free": 4096, "total": 2 * 10**6,
                             "full": True}}, c.FAIL, "free space on /home"),
    (c.check_disk, {"disk": {"path": "/h", "mount": "/home", "free": 10**6, "total": 10**9,
                             "full": False}}, c.WARN, "df -h /home"),
    (c.check_disk, {"daemon_status": {"pid": 42, "version": VERSION,
                                      "disk": {"events_dropped": 3}}}, c.FAIL, "by itself"),
    (c.check_socket, {"socket_problem": "too long"}, c.FAIL, "shorter"),
    (c.check_socket, {"socket_is_socket": False}, c.FAIL, "rm "),
    (c.check_socket, {"socket_mode": 0o666}, c.FAIL, "restart"),
    (c.check_socket, {"socket_uid": 0}, c.FAIL, "that user"),
    (c.check_socket, {"socket_exists": False}, c.FAIL, "restart"),
    (c.check_socket, DOWN, c.FAIL, "daemon start"),
    (c.check_daemon, DOWN | {"daemon_pid": None}, c.FAIL, "daemon start"),
    (c.check_daemon, DOWN, c.FAIL, "daemon restart"),
    (c.check_daemon, {"daemon_status": {"pid": 42, "version": "1.0.0"}}, c.FAIL,
     "daemon restart"),
    (c.check_service, {"service": None}, c.WARN, "daemon install"),
    (c.check_service, {"service_state": None, "service_error": "no bus"}, c.FAIL, "manager"),
    (c.check_service, {"service_state": {"loaded": False}}, c.FAIL, "daemon install"),
    (c.check_service, {"service_state": {"loaded": True, "enabled": False}}, c.FAIL,
     "daemon install"),
    (c.check_service, {"service_state": {"loaded": True, "enabled": True, "active": False,
                                         "state": "failed", "last_exit": "exited 78"}},
     c.FAIL, "daemon start"),
    (c.check_service, {"service_state": {"loaded": True, "enabled": True, "active": True,
                                         "main_pid": 7}}, c.FAIL, "daemon restart"),
    (c.check_service_files, {"unit_files": {"/u": (None, "unit")}}, c.FAIL, "daemon install"),
    (c.check_service_files, {"unit_files": {"/u": ("old", "new")}}, c.FAIL, "daemon install"),
    (c.check_service_files, {"exec_program_ok": False}, c.FAIL, "daemon install"),
    (c.check_service_code, {"root_code_problem": "/home/alice belongs to uid 1000, not root"},
     c.FAIL, "sudo taskmux daemon install --system --user alice"),
    (c.check_service_code, {"root_code_error": "Permission denied"}, c.WARN, "sudo taskmux"),
    (c.check_proxy, {"proxy": ABSENT}, c.WARN, ""),
    (c.check_proxy, {"proxy": {"enabled": True, "bound": False, "error": "port 443 in use"}},
     c.FAIL, "free the ports"),
    (c.check_proxy, DOWN, c.SKIP, ""),
    (c.check_dns, {"dns": ABSENT}, c.WARN, ""),
    (c.check_dns, {"dns": {"serving": False, "error": "port in use"}}, c.FAIL, "restart"),
    (c.check_dns, {"dns": {"resolver": "noop"}, "dns_system": None}, c.WARN, "host_resolver"),
    (c.check_dns, {"dns": {"resolver": "etc_hosts", "missing": ["a.p.localhost"],
                           "hosts_file": "/etc/hosts"}}, c.FAIL, "dns install"),
    (c.check_dns, {"dns": {"resolver": "etc_hosts", "error": "cannot write /etc/hosts"}},
     c.FAIL, "dns install"),
    (c.check_dns, {"dns_direct": ["10.0.0.1"]}, c.FAIL, "restart"),
    (c.check_dns, {"dns_direct": None, "dns_direct_error": "timed out"}, c.FAIL, "restart"),
    (c.check_dns, {"dns_system": None, "dns_system_error": "Name or service not known"},
     c.FAIL, "resolver"),
    (c.check_ca, {"ca": ABSENT}, c.WARN, ""),
    (c.check_ca, {"ca": None, "ca_error": "boom"}, c.FAIL, "restart"),
    (c.check_ca, {"ca": {"path": "/ca.pem", "exists": False}}, c.WARN, "ca install"),
    (c.check_ca, {"ca": {"path": "/ca.pem", "exists": True, "trusted": None,
                         "summary": "see the keychain"}}, c.WARN, "ca install"),
    (c.check_ca, {"ca": {"path": "/ca.pem", "exists": True, "trusted": False}}, c.FAIL,
     "ca install"),
    (c.check_browsers, {"nss": [{"db": "/home/alice/.mozilla/firefox/x.default",
                                 "trusted": True, "detail": "trusts the CA"}]},
     c.FAIL, "ca install"),  # Chromium installed, ~/.pki/nssdb missing
    (c.check_browsers, {"nss": [{"db": "/home/alice/.pki/nssdb", "trusted": False,
                                 "detail": "does not hold the taskmux CA"}]},
     c.FAIL, "ca install"),
    (c.check_browsers, {"nss_error": "certutil is not installed"}, c.WARN, "libnss3-tools"),
    (c.check_browsers, {"browsers": ["firefox"], "nss": []}, c.WARN, "ca install"),
    (c.check_browsers, {"browsers": [], "nss": []}, c.SKIP, ""),
    (c.check_update, {"update": ABSENT}, c.WARN, ""),
    (c.check_update, {"update": {"current": VERSION, "bad_versions": [VERSION]}}, c.FAIL,
     "update --rollback"),
    (c.check_update, {"update": {"current": VERSION, "last_error": "HTTP 503"}}, c.WARN,
     "update --check"),
]


@pytest.mark.parametrize(("check", "changes", "status", "hint"), FAILING,
                         ids=[f"{case[0].__name__}-{i}" for i, case in enumerate(FAILING)])
def test_each_check_fails_on_what_it_should(check: Callable[[Facts], c.Check],
                                            changes: dict[str, Any], status: str,
                                            hint: str) -> None:
    assert check(healthy()).status == c.OK
    result = check(healthy(**changes))
    assert result.status == status, result
    if status in (c.FAIL, c.WARN) and hint:
        assert result.hint and hint in result.hint, result


@pytest.mark.parametrize(("text", "ok"), [("tmux 3.2a", True), ("tmux 3.4", True),
                                          ("tmux next-3.6", True), ("tmux master", True),
                                          ("tmux openbsd-7.5", True), ("tmux 3.10", True),
                                          ("tmux 2.9a", False), ("tmux 3.1", False)])
def test_tmux_versions(text: str, ok: bool) -> None:
    assert (c.check_tmux(healthy(tmux_version=text)).status == c.OK) is ok


def test_service_code_is_judged_only_for_the_system_service() -> None:
    for changes in ({"service": None}, {"root_program": None},
                    {"service": {"scope": "user", "unit": "taskmuxd.service"},
                     "root_code_problem": "ignored: the user's own service"}):
        assert c.check_service_code(healthy(**changes)).status == c.SKIP, changes
    other = c.check_service_code(healthy(root_packages_checked=False))
    assert other.status == c.OK and "not checked" in other.summary
    bad = c.check_service_code(healthy(root_code_problem="/home/alice belongs to uid 1000"))
    assert "/venv/bin/taskmuxd as root" in bad.summary and "uid 1000" in bad.summary
    assert bad.hint and "daemon uninstall --system --user alice" in bad.hint
    assert "as alice, `taskmux daemon install --user-unit`" in bad.hint


def test_a_disabled_proxy_is_fine() -> None:
    assert c.check_proxy(healthy(proxy={"enabled": False, "bound": False})).status == c.OK


@pytest.mark.parametrize(("summary", "shown"), [
    ("https on 127.0.0.1 port 443; 1 projects, 1 connections",
     "https on 127.0.0.1 port 443; 1 project, 1 connection"),
    ("https on 127.0.0.1 port 443; 21 projects, 0 connections",
     "https on 127.0.0.1 port 443; 21 projects, 0 connections")])
def test_the_proxy_line_counts_in_words(summary: str, shown: str) -> None:
    proxy = {**healthy().proxy, "summary": summary}  # type: ignore[dict-item]
    assert c.check_proxy(healthy(proxy=proxy)).summary == shown


class TinyDns:
    """A UDP server answering A queries with loopback, for the direct query."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            question_end = data.index(b"\x00", 12) + 5
            answer = b"\xc0\x0c" + bytes([0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1])
            header = data[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
            self.sock.sendto(header + data[12:question_end] + answer, peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tiny_dns() -> Iterator[TinyDns]:
    server = TinyDns()
    yield server
    server.close()


def test_dns_query_against_a_real_socket(tiny_dns: TinyDns) -> None:
    assert query_a("web.demo.localhost", "127.0.0.1", tiny_dns.port) == ["127.0.0.1"]
    with pytest.raises(ValueError, match="NXDOMAIN"):
        parse_answer(b"\x12\x34\x81\x83" + b"\x00" * 8, 0x1234)
    with pytest.raises(ValueError, match="not a response"):
        parse_answer(build_query("x.localhost", 7), 7)


def test_doctor_command_fails_without_a_daemon(env: dict[str, str], home: str) -> None:
    env = {**env, "HOME": home}  # doctor reads the browsers' databases under HOME
    code, out = run_json(["doctor"], env)
    assert code == 1 and out["healthy"] is False
    by_name = {check["name"]: check for check in out["checks"]}
    assert by_name["daemon"]["status"] == "fail"
    assert "daemon start" in by_name["daemon"]["hint"]
    assert by_name["tmux"]["status"] in ("ok", "fail")
    proc = run_cli(["doctor"], env)
    assert proc.returncode == 1 and "FAIL  daemon" in proc.stdout and "fix: " in proc.stdout


def test_doctor_command_passes_with_a_daemon(daemon: DaemonProcess, env: dict[str, str],
                                             home: str) -> None:
    code, out = run_json(["doctor"], {**env, "HOME": home})
    by_name = {check["name"]: check for check in out["checks"]}
    assert by_name["daemon"]["status"] == "ok", by_name["daemon"]
    assert by_name["socket"]["status"] == "ok" and by_name["state"]["status"] == "ok"
    # Parts this daemon does not have yet are warnings, not failures.
    for name in ("proxy", "dns", "ca", "update"):
        assert by_name[name]["status"] in ("ok", "warn"), by_name[name]
    assert by_name["service"]["status"] == "warn"
    failed = [n for n, ch in by_name.items() if ch["status"] == "fail"]
    assert (code == 0) == (not failed)
    if by_name["tmux"]["status"] == "ok":
        assert code == 0 and out["healthy"] is True


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the system scope needs root")
def test_doctor_checks_an_installed_service(env: dict[str, str], home: str,
                                            tmp_path: str) -> None:
    fake = make_fake_manager(str(tmp_path), env)
    code, out = run_json(["daemon", "install"], fake.env)
    assert code == 0, out
    looking = {**fake.env, "HOME": home}  # doctor reads the browsers' databases under HOME
    code, out = run_json(["doctor"], looking)
    by_name = {check["name"]: check for check in out["checks"]}
    assert by_name["service"]["status"] == "ok", by_name["service"]
    assert by_name["service-files"]["status"] == "ok", by_name["service-files"]
    # What install writes today passes, this installation's packages included (the test
    # venv and checkout are root's).
    assert by_name["service-code"]["status"] == "ok", by_name["service-code"]
    assert "this installation's packages" in by_name["service-code"]["summary"]
    template = fake.root + "/etc/systemd/system/taskmuxd@.service"
    with open(template, "a") as fh:
        fh.write("# hand edit\n")
    code, out = run_json(["doctor"], looking)
    by_name = {check["name"]: check for check in out["checks"]}
    assert code == 1 and by_name["service-files"]["status"] == "fail"
    assert template in by_name["service-files"]["summary"]
    run_json(["daemon", "stop"], fake.env)
    code, out = run_json(["doctor"], looking)
    by_name = {check["name"]: check for check in out["checks"]}
    assert by_name["service"]["status"] == "fail" and "inactive" in by_name["service"]["summary"]
    run_json(["daemon", "uninstall"], fake.env)


def _old_system_service(fake: FakeManager, home: str, manager: str, user: str,
                        program: list[str]) -> None:
    """The system unit (or LaunchDaemon) and service record an older taskmux left behind,
    its program given: written by hand, since install now refuses such a program."""
    argv = [*program, "run", "--user", user]
    if manager == "launchd":
        label = f"dev.taskmux.taskmuxd.{user}"
        unit, unit_file = label, fake.root + f"/Library/LaunchDaemons/{label}.plist"
        os.makedirs(os.path.dirname(unit_file), exist_ok=True)
        with open(unit_file, "wb") as fh:
            plistlib.dump({"Label": label, "ProgramArguments": argv}, fh)
    else:
        unit, unit_file = f"taskmuxd@{user}.service", \
            fake.root + "/etc/systemd/system/taskmuxd@.service"
        os.makedirs(os.path.dirname(unit_file), exist_ok=True)
        with open(unit_file, "w") as fh:
            fh.write(f"[Service]\nExecStart={' '.join(program)} run --user %i\n")
    record = {"format": 1, "manager": manager, "scope": "system", "unit": unit,
              "unit_file": unit_file, "user": user, "uid": pwd.getpwnam(user).pw_uid,
              "domain": "system"}
    with open(os.path.join(home, "service.json"), "w") as fh:
        json.dump(record, fh)


def _script(path: str, interpreter: str, owner: int) -> str:
    with open(path, "w") as fh:
        fh.write(f"#!{interpreter}\nimport taskmuxd.cli\n")
    os.chown(path, owner, owner)
    os.chmod(path, 0o755)
    return path


def _service_code(env: dict[str, str]) -> dict[str, Any]:
    _code, out = run_json(["doctor"], env)
    return next(ch for ch in out["checks"] if ch["name"] == "service-code")  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="files of another user need root")
@pytest.mark.parametrize("manager", ["systemd", "launchd"])
def test_doctor_fails_a_system_service_whose_program_a_user_can_change(
        env: dict[str, str], home: str, tmp_path: str, manager: str) -> None:
    fake = make_fake_manager(os.path.join(str(tmp_path), "svc"), env, manager)
    roots = os.path.join(str(tmp_path), "opt")  # root's, 0700 (pytest's): only root changes it
    os.makedirs(roots)
    with throwaway_user() as user:
        uid, name = user.pw_uid, user.pw_name
        venv = os.path.join(user.pw_dir, "venv")  # the user's folder, as ~/.taskmux/app is
        os.makedirs(venv)
        os.chown(venv, uid, uid)
        python = os.path.join(venv, "python")
        shutil.copy("/bin/true", python)
        os.chown(python, uid, uid)
        cases = [  # (program, what the check must blame; None: it passes)
            ([_script(os.path.join(venv, "taskmuxd"), "/usr/bin/python3", uid)],
             f"{user.pw_dir} belongs to uid {uid}"),
            ([_script(os.path.join(roots, "users-own"), "/usr/bin/python3", uid)],
             f"users-own belongs to uid {uid}"),
            ([_script(os.path.join(roots, "via-users-python"), python, 0)],
             f"{user.pw_dir} belongs to uid {uid}"),
            (["/usr/bin/python3", _script(os.path.join(roots, "guard.py"), "/usr/bin/python3",
                                          0), "--home", venv, "--"],
             f"{user.pw_dir} belongs to uid {uid}"),  # the guard starts what --home holds
            ([_script(os.path.join(roots, "taskmuxd"), "/usr/bin/python3", 0)], None),
        ]
        for program, blame in cases:
            _old_system_service(fake, home, manager, name, program)
            check = _service_code(fake.env)
            if blame is None:
                assert check["status"] == "ok", check
                assert f"root runs {' '.join(program)}" in check["summary"]
                continue
            assert check["status"] == "fail", (program, check)
            assert blame in check["summary"] and " ".join(program) in check["summary"]
            assert f"sudo taskmux daemon install --system --user {name}" in check["hint"]
            assert f"as {name}, `taskmux daemon install --user-unit`" in check["hint"]
            _code, out = run_json(["daemon", "status"], fake.env)
            assert blame in out["service"]["root_code_problem"], out
            text = run_cli(["daemon", "status"], fake.env).stdout
            assert "unsafe:   root runs code a user could change" in text, text
        _code, out = run_json(["daemon", "status"], fake.env)
        assert "root_code_problem" not in out["service"], out



@pytest.mark.parametrize(("manager", "content"), [
    ("launchd", b"<?xml version='1.0'?><plist><dict><key>a</key>"),
    ("launchd", b"<?xml version='1.0'?><plist><array/></plist>"),
    ("launchd", b"\xff\xfe not a plist"),
    ("systemd", b"[Service]\nExecStart=\xff\xfe\n"),
    ("systemd", b"[Service]\n")])
def test_an_unreadable_installed_file_names_no_program(tmp_path: str, manager: str,
                                                       content: bytes) -> None:
    from taskmuxctl.service.rootcode import installed_program

    path = os.path.join(str(tmp_path), "unit")
    with open(path, "wb") as fh:
        fh.write(content)
    assert installed_program(manager, path) is None
    assert installed_program(manager, str(tmp_path)) is None  # a folder


def test_the_installed_program_is_read_up_to_run(tmp_path: str) -> None:
    from taskmuxctl.service.rootcode import installed_program, script_interpreter

    unit = os.path.join(str(tmp_path), "unit")
    with open(unit, "w") as fh:
        fh.write('[Service]\nExecStart=-/opt/t/bin/taskmuxd "--x y" run --user %i\n')
    assert installed_program("systemd", unit) == ["/opt/t/bin/taskmuxd", "--x y"]
    plist = os.path.join(str(tmp_path), "job.plist")
    with open(plist, "wb") as fh:
        plistlib.dump({"ProgramArguments": ["/usr/bin/python3", "/g.py", "--", "run"]}, fh)
    assert installed_program("launchd", plist) == ["/usr/bin/python3", "/g.py", "--"]
    with open(unit, "w") as fh:
        fh.write("#!/opt/t/bin/python -I\n")
    assert script_interpreter(unit) == "/opt/t/bin/python"
    with open(unit, "w") as fh:
        fh.write("#!/usr/bin/env python3\n")
    assert script_interpreter(unit) == "/usr/bin/env"  # env is checked; what it finds is not
    for head in ("#!python\n", "print()\n", ""):
        with open(unit, "w") as fh:
            fh.write(head)
        assert script_interpreter(unit) is None, head
    os.mkfifo(os.path.join(str(tmp_path), "fifo"))
    assert script_interpreter(os.path.join(str(tmp_path), "fifo")) is None  # never opened
