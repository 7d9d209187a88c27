"""--host: parsing the ssh:// address, the ssh words, the refusals, and the one-line errors
(pure logic; tests/test_ssh_host.py drives a real sshd)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from taskmuxctl import remote
from taskmuxctl.core import sshchannel
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, RpcError
from taskmuxctl.parse import fast
from tests.helpers import BIN


@pytest.mark.parametrize(("text", "user", "host", "port"), [
    ("ssh://box", None, "box", None),
    ("ssh://ann@box", "ann", "box", None),
    ("ssh://ann@box.example:2222", "ann", "box.example", 2222),
    ("ssh://[::1]:2200", None, "::1", 2200),
    ("ssh://a@b@box:22/", "a@b", "box", 22),
])
def test_addresses(text: str, user: str | None, host: str, port: int | None) -> None:
    t = sshchannel.parse_target(text)
    assert (t.user, t.host, t.port) == (user, host, port)


@pytest.mark.parametrize(("text", "says"), [
    ("box", "only ssh:// addresses"), ("tcp://box:1", "only ssh:// addresses"),
    ("ssh://box:0", "port '0'"), ("ssh://box:http", "port 'http'"), ("ssh://box:", "empty"),
    ("ssh://@box", "user before @ is empty"), ("ssh://", "host name is missing"),
    ("ssh://-oProxyCommand=x", "host name is missing or malformed"),
    ("ssh://box/path", "no path"), ("ssh://[::1", "unclosed"),
])
def test_bad_addresses_say_what_to_give(text: str, says: str) -> None:
    with pytest.raises(RpcError) as info:
        sshchannel.parse_target(text)
    assert says in info.value.message and "ssh://[USER@]HOST[:PORT]" in info.value.message
    assert info.value.code == Code.USAGE


def test_ssh_words(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TASKMUX_SSH_COMMAND", "ssh -F '/a b/config'")
    monkeypatch.setenv("TASKMUX_SSH_CONNECT_TIMEOUT", "4")
    paths = Paths(str(tmp_path))
    words = sshchannel.ssh_base(paths, sshchannel.parse_target("ssh://ann@box:2222"))
    assert words[:3] == ["ssh", "-F", "/a b/config"]
    assert words[-2:] == ["--", "box"]
    for option in ("BatchMode=yes", "ConnectTimeout=4", "ControlMaster=auto",
                   f"ControlPath={tmp_path}/ssh/%C", "ControlPersist=60"):
        assert option in words
    assert words[words.index("-p"):words.index("-p") + 2] == ["-p", "2222"]
    assert words[words.index("-l"):words.index("-l") + 2] == ["-l", "ann"]
    assert "-T" in words and "-t" in sshchannel.ssh_base(paths, sshchannel.parse_target(
        "ssh://box"), tty=True)
    assert os.stat(tmp_path / "ssh").st_mode & 0o777 == 0o700


def test_split_host() -> None:
    assert remote.split_host(["--host", "ssh://b", "status"]) == (["status"], "ssh://b")
    assert remote.split_host(["status", "--host=ssh://b"]) == (["status"], "ssh://b")
    assert remote.split_host(["send", "w", "--", "--host", "x"]) == (
        ["send", "w", "--", "--host", "x"], None)
    assert remote.split_host(["-p", "shop", "--host", "ssh://b", "status"]) == (
        ["-p", "shop", "status"], "ssh://b")
    # After `add`, --host is the task's host name; the machine's goes before the command.
    assert remote.split_host(["add", "api", "sleep 1", "--host", "api"]) == (
        ["add", "api", "sleep 1", "--host", "api"], None)
    assert remote.split_host(["--host", "ssh://b", "add", "api", "x", "--host", "api"]) == (
        ["add", "api", "x", "--host", "api"], "ssh://b")


def refusal(words: list[str]) -> str | None:
    parsed = fast(words)
    assert parsed is not None
    return remote.refusal(parsed[0], parsed[1], "ssh://ann@box:2222")


def test_refusals() -> None:
    assert refusal(["status", "-p", "shop"]) is None
    assert refusal(["version"]) is None
    why = refusal(["status"])
    assert why is not None and "-p NAME" in why
    why = refusal(["daemon", "install"])
    assert why is not None and "`ssh -p 2222 ann@box taskmux daemon install`" in why


TARGET = sshchannel.parse_target("ssh://ann@box:2222")


@pytest.mark.parametrize(("code", "stderr", "reason", "says"), [
    (255, "ssh: connect to host box port 2222: Connection refused\r\n", "unreachable",
     "box:2222 is unreachable"),
    (255, "ssh: Could not resolve hostname box: Name or service not known\n", "unreachable",
     "check that the machine is up"),
    (255, "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
     "Host key verification failed.\n", "host_key", "ssh-keygen -R '[box]:2222'"),
    (255, "ann@box: Permission denied (publickey).\n", "auth", "your agent"),
    (127, "sh: 1: taskmuxctl: not found\n", "no_taskmux", "has no `taskmuxctl`"),
    (127, "bash: line 1: taskmuxctl: command not found\n", "no_taskmux", "install taskmux"),
    (2, "taskmuxctl: error: unknown command 'dial-stdio'; `taskmuxctl --help` lists the "
     "commands\n", "too_old", "too old"),
    (255, "kex_exchange_identification: read: Connection reset by peer\n", "unreachable",
     "unreachable"),
    (255, "something new\n", "ssh_failed", "try `ssh -p 2222 ann@box`"),
    (1, "taskmuxctl: error: the daemon is not running (no socket at /x); start it\n",
     "remote", "ann@box:2222: the daemon is not running"),
])
def test_ssh_failures_become_one_clear_error(code: int, stderr: str, reason: str,
                                             says: str) -> None:
    err = sshchannel.explain(TARGET, code, stderr)
    assert err.reason == reason
    assert says in err.message
    assert "\n" not in err.message


def test_a_protocol_mismatch_names_both_versions(tmp_path: Any) -> None:
    """What the remote `dial-stdio` really says for another protocol, as the client tells it."""
    proc = subprocess.run([os.path.join(BIN, "taskmuxctl"), "dial-stdio", "--protocol", "9"],
                          env={**os.environ, "TASKMUX_HOME": str(tmp_path)},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    err = sshchannel.explain(TARGET, proc.returncode, proc.stderr)
    assert err.reason == "protocol"
    assert "protocol 9" in err.message and "speaks 1" in err.message
    assert "update the older" in err.message


def test_which_commands_run_whole_over_there() -> None:
    def over(words: list[str]) -> bool:
        parsed = fast(words)
        assert parsed is not None
        return remote.over_ssh(*parsed)

    assert over(["logs", "-p", "shop"]) and over(["attach", "-p", "shop"])
    assert over(["start", "--monitor", "-p", "shop"])
    assert not over(["start", "-p", "shop"]) and not over(["status", "-p", "shop"])
    assert not over(["daemon", "list"])


def test_an_unwritable_control_folder_is_said(tmp_path: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    paths = Paths(str(blocker))  # its "ssh" folder would have to be inside a file
    with pytest.raises(RpcError) as info:
        sshchannel.Channel(paths, TARGET, 5.0)
    assert "cannot prepare ssh for --host ann@box:2222" in info.value.message
    assert "TASKMUX_HOME" in info.value.message
