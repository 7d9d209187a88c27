"""Connections from another uid get a JSON-RPC error and a log line, never service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from taskmuxctl.core.protocol import Code
from tests.helpers import DaemonProcess, call
from tests.users import throwaway_user

CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"jsonrpc": "2.0", "method": "daemon.status", "id": 1}\n')
except (BrokenPipeError, ConnectionResetError):
    pass  # refused before we spoke: the refusal is already waiting to be read
buf = b""
while not buf.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
print(buf.decode().strip())
"""


def other_user_python() -> str:
    """An interpreter another user may run (the test venv's may sit under a private home)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and os.stat(candidate).st_mode & 0o001:
            return candidate
    found = shutil.which("python3")
    if found is None:
        pytest.skip("no python3 another user can run")
    return found


def test_another_uid_is_refused(daemon: DaemonProcess, home: str) -> None:
    python = other_user_python()
    with throwaway_user() as user:
        # Open the door the file modes normally keep shut, to reach the uid check behind it.
        os.chmod(home, 0o711)
        os.chmod(daemon.socket, 0o666)
        proc = subprocess.run([python, "-I", "-c", CLIENT, daemon.socket], user=user.pw_uid,
                              group=user.pw_gid, extra_groups=[], capture_output=True, text=True,
                              timeout=30, cwd="/")
        assert proc.returncode == 0, proc.stderr
        reply = json.loads(proc.stdout)
        assert reply["error"]["code"] == Code.PERMISSION_DENIED
        assert f"uid {user.pw_uid}" in reply["error"]["message"]
        assert "result" not in reply
        assert f"refused a connection from uid {user.pw_uid}" in daemon.output()
    # The owner is still served.
    assert call(daemon.socket, "daemon.ping") == {"pong": True}
