"""``taskmuxctl dial-stdio`` bridges ctl.sock to stdin/stdout, byte for byte."""

from __future__ import annotations

import os
import socket
import subprocess
import time

from tests.helpers import BIN, DaemonProcess

CTL = os.path.join(BIN, "taskmuxctl")
# Odd but valid framing (spaces, CRLF, a blank line, a batch) that the bridge must not touch.
REQUESTS = (b'{"jsonrpc": "2.0", "method": "daemon.ping", "id": 1}\r\n\n'
            b'  {"jsonrpc":"2.0","method":"daemon.version","id":"two"}\n'
            b'[{"jsonrpc":"2.0","method":"daemon.ping","id":3}]\n'
            b'{"jsonrpc":"2.0","method":"no.such.method","id":4}\n')


def direct(sock_path: str, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_bridges_both_ways_byte_exact(daemon: DaemonProcess, env: dict[str, str]) -> None:
    proc = subprocess.run([CTL, "dial-stdio", "--protocol", "1"], input=REQUESTS, env=env,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    assert proc.stdout == direct(daemon.socket, REQUESTS)
    assert proc.stdout.count(b"\n") == 4 and b'"id":"two"' in proc.stdout


def test_a_large_request_crosses_whole(daemon: DaemonProcess, env: dict[str, str]) -> None:
    """More than a pipe buffer in one line: the reply (an error naming no such method)
    arrives after every byte went through."""
    big = (b'{"jsonrpc":"2.0","method":"daemon.ping","id":5,"params":{"pad":"'
           + b"x" * 300_000 + b'"}}\n')
    proc = subprocess.run([CTL, "dial-stdio"], input=big, env=env, capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == direct(daemon.socket, big)
    assert b'"id":5' in proc.stdout


def test_ends_when_the_daemon_goes(daemon: DaemonProcess, env: dict[str, str]) -> None:
    with subprocess.Popen([CTL, "dial-stdio"], env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b'{"jsonrpc":"2.0","method":"daemon.ping","id":1}\n')
            proc.stdin.flush()
            assert b'"pong":true' in proc.stdout.readline()
            daemon.stop()
            # stdin stays open: only the daemon's side closed.
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_ends_when_stdout_is_gone(daemon: DaemonProcess, env: dict[str, str]) -> None:
    with subprocess.Popen([CTL, "dial-stdio"], env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdout.close()
            proc.stdin.write(b'{"jsonrpc":"2.0","method":"daemon.ping","id":1}\n')
            proc.stdin.flush()
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert call_ok(daemon)


def call_ok(daemon: DaemonProcess) -> bool:
    return b'"pong":true' in direct(daemon.socket, b'{"jsonrpc":"2.0","method":"daemon.ping",'
                                                   b'"id":1}\n')


def test_another_protocol_is_refused_on_stderr(daemon: DaemonProcess,
                                               env: dict[str, str]) -> None:
    proc = subprocess.run([CTL, "dial-stdio", "--protocol", "99"], input=b"", env=env,
                          capture_output=True, timeout=30)
    assert proc.returncode == 3
    assert proc.stdout == b""  # nothing the caller could take for a reply
    assert b"protocol mismatch" in proc.stderr and b"update the older" in proc.stderr


def test_no_daemon_and_no_start_says_so(env: dict[str, str], home: str) -> None:
    started = time.monotonic()
    proc = subprocess.run([CTL, "--no-daemon-start", "dial-stdio"], input=b"", env=env,
                          capture_output=True, timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode != 0 and proc.stdout == b""
    assert b"the daemon is not running" in proc.stderr
    assert not os.path.exists(os.path.join(home, "ctl.sock"))


def test_it_imports_nothing_heavy(daemon: DaemonProcess, env: dict[str, str]) -> None:
    """It starts once per remote call: what it imports is what each call waits for."""
    from tests.test_imports import FORBIDDEN

    proc = subprocess.run([CTL, "dial-stdio"], env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    mods = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}
    assert "taskmuxctl" in mods, proc.stderr
    assert not sorted(mods & {*FORBIDDEN, "subprocess", "shlex"})
