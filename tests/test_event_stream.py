"""The pushed event stream: ids in the history, ``events.subscribe`` on a real daemon (filters,
a cursor after a reconnection, a burst, a subscriber too slow to keep), ``events -f``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import Any

from taskmuxctl.core.eventlog import KEEP, TRIM_AT, EventLog
from tests.helpers import BIN, DaemonProcess, call
from tests.projects import write_project


def test_ids_grow_by_one_across_writers_and_trims(tmp_path: Any) -> None:
    path = str(tmp_path / "events.jsonl")
    with open(path, "w") as fh:  # a history from before ids existed
        fh.write('{"time":"t","project":null,"task":null,"event":"old"}\n')
    daemon, other = EventLog(path), EventLog(path)
    seen: list[dict[str, Any]] = []
    daemon.subscribe(seen.append)
    assert daemon.emit("a")["id"] == 1
    assert other.emit("b")["id"] == 2  # another process appends
    assert daemon.emit("c")["id"] == 3
    # the daemon's listeners got the other writer's record too, before its own
    assert [r["event"] for r in seen] == ["a", "b", "c"]
    for _ in range(TRIM_AT - 2):
        daemon.emit("x")
    with open(path) as fh:
        lines = [json.loads(line) for line in fh]
    assert len(lines) <= KEEP + 1
    ids = [r["id"] for r in lines]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert other.emit("after")["id"] == ids[-1] + 1
    assert daemon.current_id() == ids[-1] + 1


class Conn:
    """A raw connection to the control socket that reads replies and notifications."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1

    def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        rid = self.next_id
        self.next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params is not None:
            msg["params"] = params
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        return rid

    def read(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            assert chunk, "the daemon closed the connection"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        assert isinstance(msg, dict)
        return msg

    def subscribe(self, **params: Any) -> dict[str, Any]:
        rid = self.send("events.subscribe", params)
        reply = self.read()  # the reply comes before anything the subscription pushes
        assert reply.get("id") == rid, reply
        assert "result" in reply, reply
        return dict(reply["result"])

    def events(self, count: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < count:
            msg = self.read()
            assert msg.get("method") == "events.event", msg
            out.append(msg["params"]["event"])
        return out

    def close(self) -> None:
        self.sock.close()


def _configs(tmp_path: Any, names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        folder = write_project(str(tmp_path / name), f"""
            name = "{name}"
            [tasks.t]
            command = "sleep 600"
            auto_start = false
        """)
        out[name] = os.path.join(folder, "taskmux.toml")
    return out


def _churn(sock: str, configs: dict[str, str], rounds: int) -> None:
    """Two events per project per round: every project registered (one batch), then every
    one unregistered (another)."""
    for _ in range(rounds):
        _batch(sock, [("project.register", {"config": c}) for c in configs.values()])
        _batch(sock, [("project.unregister", {"project": n}) for n in configs])


def _batch(sock: str, calls: list[tuple[str, dict[str, Any]]]) -> None:
    for at in range(0, len(calls), 100):
        part = calls[at:at + 100]
        msg = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
               for i, (m, p) in enumerate(part)]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(sock)
            s.sendall(json.dumps(msg).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                assert chunk
                buf += chunk
        replies = json.loads(buf)
        assert len(replies) == len(part) and not any("error" in r for r in replies), buf[:500]


def test_subscribe_filters_and_pushes_in_order(daemon: DaemonProcess, tmp_path: Any) -> None:
    configs = _configs(tmp_path, ["alpha", "beta"])
    everything, alpha, gone = Conn(daemon.socket), Conn(daemon.socket), Conn(daemon.socket)
    try:
        everything.subscribe()
        alpha.subscribe(project="alpha")
        gone.subscribe(kinds=["project_unregistered"])
        _churn(daemon.socket, configs, 2)
        got = everything.events(8)
        ids = [e["id"] for e in got]
        assert ids == list(range(ids[0], ids[0] + 8))
        assert [e["event"] for e in got if e["project"] == "alpha"] == [
            "project_registered", "project_unregistered"] * 2
        assert {e["project"] for e in alpha.events(4)} == {"alpha"}
        assert {e["event"] for e in gone.events(4)} == {"project_unregistered"}
        # unsubscribing stops the pushes; the connection still answers calls
        rid = alpha.send("events.unsubscribe", {"subscription": 2})
        while (msg := alpha.read()).get("id") != rid:
            pass
        assert msg["result"]["removed"] is True
    finally:
        for c in (everything, alpha, gone):
            c.close()


def test_reconnect_with_cursor_misses_nothing(daemon: DaemonProcess, tmp_path: Any) -> None:
    configs = _configs(tmp_path, ["gamma"])
    first = Conn(daemon.socket)
    first.subscribe(project="gamma")
    _churn(daemon.socket, configs, 3)
    seen = first.events(6)
    first.close()
    cursor = seen[-1]["id"]
    _churn(daemon.socket, configs, 5)  # 10 events while nobody listens
    again = Conn(daemon.socket)
    try:
        reply = again.subscribe(project="gamma", cursor=cursor)
        assert reply["replayed"] == 10 and reply["missed"] == 0
        _churn(daemon.socket, configs, 1)  # and 2 live ones after the replay
        got = again.events(12)
        ids = [e["id"] for e in got]
        assert ids == list(range(cursor + 1, cursor + 13))
        # from the beginning: the whole filtered history, then live
        old = Conn(daemon.socket)
        reply = old.subscribe(project="gamma", cursor=0)
        assert reply["replayed"] == 18
        assert [e["id"] for e in old.events(18)] == [e["id"] for e in seen] + ids
        old.close()
    finally:
        again.close()


def test_a_burst_of_1000_events_arrives_whole(daemon: DaemonProcess) -> None:
    conn = Conn(daemon.socket)
    try:
        start = conn.subscribe(project="burst")["cursor"]
        call(daemon.socket, "debug.emit", {"count": 1000, "project": "burst"})
        got = conn.events(1000)
        assert [e["id"] for e in got] == list(range(start + 1, start + 1001))
        assert [e["details"]["n"] for e in got] == list(range(1000))
    finally:
        conn.close()


def test_a_slow_subscriber_is_dropped_and_can_resume(daemon: DaemonProcess) -> None:
    slow = Conn(daemon.socket)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        start = slow.subscribe(queue=16)["cursor"]
        # 2,000 events of 1 KB at once, faster than anyone could read them
        call(daemon.socket, "debug.emit", {"count": 2000, "padding": 1000})
        assert call(daemon.socket, "daemon.ping")["pong"]  # the daemon did not wait on it
        status = call(daemon.socket, "daemon.status")
        assert status["events"]["dropped_subscribers"] == 1
        assert status["events"]["subscriptions"] == 0
        got: list[dict[str, Any]] = []
        while True:
            msg = slow.read()
            if msg["method"] == "events.dropped":
                notice = msg["params"]
                break
            got.append(msg["params"]["event"])
        assert "behind" in notice["reason"]
        assert notice["cursor"] == (got[-1]["id"] if got else start)
        reply = slow.subscribe(cursor=notice["cursor"])
        rest = slow.events(start + 2000 - notice["cursor"])
        assert reply["missed"] == 0
        assert [e["id"] for e in got + rest] == list(range(start + 1, start + 2001))
    finally:
        slow.close()


def test_events_follow_prints_pushed_events(daemon: DaemonProcess, tmp_path: Any,
                                            env: dict[str, str]) -> None:
    configs = _configs(tmp_path, ["delta"])
    _churn(daemon.socket, configs, 1)
    argv = [os.path.join(BIN, "taskmuxctl"), "--json", "events", "-f", "--all-projects",
            "-n", "2"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        tail = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [e["event"] for e in tail] == ["project_registered", "project_unregistered"]
        _churn(daemon.socket, configs, 1)
        live = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [e["id"] for e in live] == [tail[-1]["id"] + 1, tail[-1]["id"] + 2]
        # across a daemon restart: the client resubscribes from its cursor
        daemon.stop()
        again = DaemonProcess(daemon.home, daemon.env).wait_ready()
        try:
            _churn(again.socket, configs, 1)
            more = [json.loads(proc.stdout.readline()) for _ in range(2)]
            assert [e["id"] for e in more] == [live[-1]["id"] + 1, live[-1]["id"] + 2]
        finally:
            again.stop()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

