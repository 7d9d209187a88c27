"""fleet.toml: adding, changing, removing and listing machines; its problems said clearly
(tests/test_ssh_host.py asks real machines through sshd)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from taskmuxctl import fleet
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import RpcError
from tests.helpers import BIN

CTL = os.path.join(BIN, "taskmuxctl")


def run(home: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMUX_")}
    return subprocess.run([CTL, *argv], env={**env, "TASKMUX_HOME": home,
                                             "TASKMUX_NO_DAEMON_START": "1"},
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_add_change_remove_list(tmp_path: object) -> None:
    home = str(tmp_path)
    assert "no hosts" in run(home, "fleet", "list").stdout
    assert run(home, "fleet", "add", "b1", "ssh://ci@build1:2222", "-g", "build",
               "-g", "linux").returncode == 0
    assert run(home, "fleet", "add", "lap", "ssh://laptop").returncode == 0
    out = run(home, "fleet", "add", "lap", "ssh://me@laptop", "--group", "desk")
    assert out.returncode == 0 and "lap: updated" in out.stdout
    listed = json.loads(run(home, "--json", "fleet", "list").stdout)
    assert listed["hosts"] == [
        {"name": "b1", "target": "ssh://ci@build1:2222", "groups": ["build", "linux"]},
        {"name": "lap", "target": "ssh://me@laptop", "groups": ["desk"]}]
    text = run(home, "fleet", "list").stdout
    assert "b1" in text and "build,linux" in text
    assert run(home, "fleet", "remove", "b1").returncode == 0
    assert [h.name for h in fleet.load(Paths(home))] == ["lap"]
    gone = run(home, "fleet", "remove", "b1")
    assert gone.returncode == 2 and "no host named 'b1'" in gone.stderr


@pytest.mark.parametrize(("argv", "says"), [
    (["fleet", "add", "a b", "ssh://x"], "must be letters"),
    (["fleet", "add", "a", "x.example"], "only ssh:// addresses"),
    (["fleet", "add", "a", "ssh://x", "-g", "no/slash"], "group name"),
    (["fleet", "status", "-g", "nope"], "no host is in group 'nope'"),
    (["fleet", "status", "--deadline", "0"], "more than 0"),
    (["--host", "ssh://x", "fleet", "status"], "does not take --host"),
    (["--host", "ssh://x", "fleet", "update"], "does not take --host"),
    (["fleet", "update", "--wave", "0"], "--wave must be at least 1"),
    (["fleet", "update", "--canary", "-1"], "--canary must be at least 0"),
    (["fleet", "update", "--soak", "-1"], "--soak must be"),
    (["fleet", "update", "--to", "latest"], "is not a version"),
    (["fleet", "update", "-g", "nope"], "no host is in group 'nope'"),
    # --host reaches another machine's daemon: no project file here names the project.
    (["--host", "ssh://x", "status"], "name the project with -p NAME (the taskmux.toml"),
    (["--host", "ssh://x", "events"], "-p NAME (or give --all-projects)"),
])
def test_bad_input_is_said(tmp_path: object, argv: list[str], says: str) -> None:
    home = str(tmp_path)
    assert run(home, "fleet", "add", "one", "ssh://one", "-g", "g1").returncode == 0
    proc = run(home, *argv)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("text", "says"), [
    ("[[host]\n", "not valid TOML"),
    ('[[host]]\nname = "a"\n', "has no target"),
    ('[[host]]\nname = "a"\ntarget = "a.example"\n', "only ssh:// addresses"),
    ('[[host]]\nname = "a"\ntarget = "ssh://a"\ngroups = "x"\n', "groups must be a list"),
    ('[[host]]\nname = "a"\ntarget = "ssh://a"\n[[host]]\nname = "a"\ntarget = "ssh://b"\n',
     "listed twice"),
    ('host = 3\n', "must be a list"),
])
def test_a_broken_fleet_file_is_named(tmp_path: object, text: str, says: str) -> None:
    paths = Paths(str(tmp_path))
    with open(fleet.path(paths), "w") as fh:
        fh.write(text)
    with pytest.raises(RpcError) as info:
        fleet.load(paths)
    assert says in info.value.message and fleet.path(paths) in info.value.message


def test_names_survive_the_round_trip(tmp_path: object) -> None:
    paths = Paths(str(tmp_path))
    hosts = [fleet.Host("a.b-c_d", 'ssh://u@h:22', ["x", "y"])]
    fleet.save(paths, hosts)
    assert [h.as_dict() for h in fleet.load(paths)] == [h.as_dict() for h in hosts]
    assert os.stat(fleet.path(paths)).st_mode & 0o777 == 0o600


def test_host_events_of_every_project_is_not_refused() -> None:
    """``--all-projects`` stands for -p: the command goes on to ssh (here, a closed port)."""
    import shutil
    import tempfile

    home = tempfile.mkdtemp(prefix="tmxf-", dir="/tmp")  # short: ssh's ControlPath limit
    try:
        proc = run(home, "--host", "ssh://nobody@127.0.0.1:1", "events", "--all-projects")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert proc.returncode == 1 and "-p NAME" not in proc.stderr, proc.stderr
    assert "unreachable" in proc.stderr and "Traceback" not in proc.stderr
