"""The unit files and property lists as rendered: systemd-analyze accepts them without a
word, plistlib reads them back, and awkward paths survive every format's quoting."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess

import pytest

from taskmuxctl.service import escape
from taskmuxctl.service.render import TemplateError, fill, render
from taskmuxctl.service.target import Target, TargetError, default_scope, resolve
from tests.helpers import BIN

AWKWARD = "/tmp/home of %h $USER \"q\" \\ & <x> ü"
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


@pytest.mark.parametrize("word", ["/plain", "/a b", "100%", "$HOME", "${X}", 'say "hi"',
                                  "back\\slash", "tab\there", "new\nline", ";", "ü∂", "'q'"])
def test_systemd_words_read_back_unchanged(word: str) -> None:
    assert escape.systemd_split(escape.systemd_command(["/bin/x", word])) == ["/bin/x", word]
    if not any(c in word for c in "\"'\\\n\t"):
        program = "/opt" + word
        assert escape.systemd_split(escape.systemd_command([program, "run"])) == \
            [program, "run"]


def test_systemd_quoting_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(escape.UnrepresentableError):
        escape.systemd_word("a\x00b")
    with pytest.raises(escape.UnrepresentableError):
        escape.systemd_command(["relative/taskmuxd"])
    # systemd refuses quotes and backslashes in the program's path (but not in arguments).
    with pytest.raises(escape.UnrepresentableError, match="install taskmux somewhere else"):
        escape.systemd_command(['/opt/"x"/taskmuxd'])
    assert escape.systemd_command(["/a b/$x%", '"q"']) == '"/a b/$x%%" "\\"q\\""'
    with pytest.raises(escape.UnrepresentableError):
        escape.systemd_word("bad\udcffbyte")
    with pytest.raises(escape.UnrepresentableError):
        escape.xml_text("bell\x07")
    assert escape.xml_text("a & <b>") == "a &amp; &lt;b&gt;"


def test_fill_rejects_unknown_and_unused_placeholders() -> None:
    assert fill("x@A@y taskmuxd@.service @B@", {"A": "1", "B": "2"}) == \
        "x1y taskmuxd@.service 2"
    with pytest.raises(TemplateError):
        fill("@A@ @C@", {"A": "1"})
    with pytest.raises(TemplateError):
        fill("@A@", {"A": "1", "B": "2"})


def target(manager: str, scope: str, state_dir: str = AWKWARD + "/.taskmux",
           home: str = AWKWARD) -> Target:
    return Target(manager, scope, "root", 0, 0, home, state_dir, root="",
                  environ={"XDG_CONFIG_HOME": home + "/.config"})


@pytest.fixture
def awkward_program(tmp_path: str) -> list[str]:
    """The real taskmuxd script, reached through a folder whose name needs quoting."""
    folder = os.path.join(str(tmp_path), "bin dir %i $HOME & ü")
    os.makedirs(folder)
    os.symlink(os.path.join(BIN, "taskmuxd"), os.path.join(folder, "taskmuxd"))
    return [os.path.join(folder, "taskmuxd")]


def _analyze(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          env=env, timeout=60)


@needs_analyze
def test_system_unit_verifies_silently(awkward_program: list[str], tmp_path: str) -> None:
    unit, drop_in = render(target("systemd", "system"), awkward_program)
    assert unit.path == "/etc/systemd/system/taskmuxd@.service" and unit.shared
    assert drop_in.path == "/etc/systemd/system/taskmuxd@root.service.d/taskmux.conf"
    # Verify an instance of the template with its drop-in applied.
    instance = os.path.join(str(tmp_path), "taskmuxd@root.service")
    with open(instance, "w") as fh:
        fh.write(unit.content + "\n" + drop_in.content)
    proc = _analyze(["verify", instance], dict(os.environ))
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    # What systemd will run, and with which state directory.
    exec_line = next(line for line in unit.content.splitlines()
                     if line.startswith("ExecStart="))
    assert escape.systemd_split(exec_line[len("ExecStart="):]) == \
        [*awkward_program, "run", "--user", "%i"]
    env_line = next(line for line in drop_in.content.splitlines()
                    if line.startswith("Environment="))
    assert escape.systemd_split(env_line[len("Environment="):]) == \
        [f"TASKMUX_HOME={AWKWARD}/.taskmux"]


@needs_analyze
def test_user_unit_verifies_silently(awkward_program: list[str], tmp_path: str) -> None:
    (unit,) = render(target("systemd", "user"), awkward_program)
    assert unit.path == AWKWARD + "/.config/systemd/user/taskmuxd.service"
    path = os.path.join(str(tmp_path), "taskmuxd.service")
    with open(path, "w") as fh:
        fh.write(unit.content)
    runtime = os.path.join(str(tmp_path), "runtime")
    os.makedirs(runtime, mode=0o700)
    proc = _analyze(["--user", "verify", path], {**os.environ, "XDG_RUNTIME_DIR": runtime})
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    assert "--user" not in unit.content.split("ExecStart=")[1].split("\n")[0]


@needs_analyze
def test_security_review_sees_the_chosen_hardening(awkward_program: list[str],
                                                   tmp_path: str) -> None:
    unit, _ = render(target("systemd", "system"), awkward_program)
    instance = os.path.join(str(tmp_path), "taskmuxd@root.service")
    with open(instance, "w") as fh:
        fh.write(unit.content)
    proc = _analyze(["security", "--offline=yes", instance], dict(os.environ))
    lines = proc.stdout.splitlines()
    for setting in ("ProtectKernelModules=", "ProtectKernelLogs=", "RestrictRealtime=",
                    "RestrictSUIDSGID=", "NotifyAccess="):
        assert any(line.startswith("✓ " + setting) for line in lines), setting
    assert "Overall exposure level for taskmuxd@root.service" in proc.stdout


@pytest.mark.parametrize("scope", ["system", "user"])
def test_plists_load_and_hold_the_keys(scope: str, awkward_program: list[str]) -> None:
    tgt = target("launchd", scope)
    (spec,) = render(tgt, [*awkward_program, "-X", "a&b<c>"], tmux="/opt/tmux & co/bin/tmux")
    job = plistlib.loads(spec.content.encode())
    args = [*awkward_program, "-X", "a&b<c>", "run"]
    if scope == "system":
        assert spec.path == "/Library/LaunchDaemons/dev.taskmux.taskmuxd.root.plist"
        assert job["Label"] == "dev.taskmux.taskmuxd.root"
        assert job["ProgramArguments"] == [*args, "--user", "root"]
        assert job["StandardErrorPath"] == "/Library/Logs/taskmux/taskmuxd.root.log"
        assert (spec.uid, spec.gid) == (0, 0)
    else:
        assert spec.path == AWKWARD + "/Library/LaunchAgents/dev.taskmux.taskmuxd.plist"
        assert job["Label"] == "dev.taskmux.taskmuxd"
        assert job["ProgramArguments"] == args
        assert job["StandardErrorPath"] == AWKWARD + "/Library/Logs/taskmux/taskmuxd.log"
    assert job["RunAtLoad"] is True
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert isinstance(job["ThrottleInterval"], int) and job["ThrottleInterval"] > 0
    assert job["StandardOutPath"] == job["StandardErrorPath"]
    assert job["AbandonProcessGroup"] is True
    env = job["EnvironmentVariables"]
    assert env["TASKMUX_HOME"] == AWKWARD + "/.taskmux"
    assert env["PATH"].split(":")[:3] == ["/opt/tmux & co/bin", "/opt/homebrew/bin",
                                          "/usr/local/bin"]
    assert "UTF-8" in env["LANG"]
    if shutil.which("plutil"):  # macOS
        proc = subprocess.run(["plutil", "-lint", "-"], input=spec.content, text=True,
                              capture_output=True)
        assert proc.returncode == 0, proc.stdout


def test_target_defaults() -> None:
    env = {"TASKMUX_SERVICE_MANAGER": "systemd", "TASKMUX_HOME": "/tmp/state"}
    as_root = resolve(environ=env, euid=0)
    assert (as_root.scope, as_root.user, as_root.unit, as_root.state_dir) == \
        ("system", "root", "taskmuxd@root.service", "/tmp/state")
    assert (default_scope(0), default_scope(1000)) == ("system", "user")
    as_user = resolve(scope="user", environ=env, euid=0)
    assert (as_user.unit, as_user.unit_file) == ("taskmuxd.service",
                                                 f"{as_user.home}/.config/systemd/user/"
                                                 "taskmuxd.service")
    with pytest.raises(TargetError, match="must be installed by root"):
        resolve(environ=env, euid=1000)  # someone else may not install root's user unit
    sudo = resolve(environ={"TASKMUX_SERVICE_MANAGER": "systemd", "SUDO_USER": "root"},
                   euid=0)
    assert sudo.state_dir == os.path.join(sudo.home, ".taskmux")
    mac = resolve(environ={"TASKMUX_SERVICE_MANAGER": "launchd"}, euid=0)
    assert (mac.unit, mac.domain) == ("dev.taskmux.taskmuxd.root", "system")
    with pytest.raises(TargetError, match="no user named"):
        resolve("no-such-user-here", environ=env, euid=0)
    with pytest.raises(TargetError, match="use 'systemd' or 'launchd'"):
        resolve(environ={"TASKMUX_SERVICE_MANAGER": "runit"}, euid=0)


def test_every_template_ships_in_the_wheel() -> None:
    import tomllib

    from taskmuxctl.service.render import TEMPLATES
    from tests.helpers import REPO

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        include = tomllib.load(fh)["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    for template in TEMPLATES.values():
        folder = template.split("/")[0]
        assert include[folder] == f"taskmuxctl/service/templates/{folder}"
        assert os.path.isfile(os.path.join(REPO, template))


def test_the_system_service_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: str) -> None:
    from taskmuxctl.service.install import install
    from taskmuxctl.service.manager import ServiceError

    tgt = Target("systemd", "system", "alice", 1000, 1000, "/home/alice", str(tmp_path),
                 root=os.path.join(str(tmp_path), "root"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ServiceError, match=r"needs root: sudo \S*taskmuxctl daemon install "
                                           r"--user alice \(or --user-unit"):
        install(tgt, [os.path.join(BIN, "taskmuxd")])
    assert not os.path.exists(os.path.join(str(tmp_path), "root", "etc"))


@pytest.mark.parametrize("scope", ["system", "user"])
def test_units_raise_the_descriptor_limit(scope: str, awkward_program: list[str]) -> None:
    unit = render(target("systemd", scope), awkward_program)[0]
    assert "\nLimitNOFILE=65536\n" in unit.content
