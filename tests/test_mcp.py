"""``taskmux mcp`` driven by the official MCP Python SDK's client over stdio, in both eras:
2026-07-28 (server/discover, per-request _meta) and the initialize handshake; every tool,
tool errors as isError results, protocol errors as JSON-RPC errors, and task state changes
arriving as log notifications."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

mcp = pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from tests.helpers import BIN, run_cli, run_json, wait_until  # noqa: E402
from tests.projects import wait_state, write_project  # noqa: E402

TOOLS = {"status", "inspect", "logs", "start", "stop", "restart", "health", "events",
         "list_projects"}


@contextlib.asynccontextmanager
async def session(env: dict[str, str], cwd: str, mode: str = "auto",
                  logs: list[Any] | None = None, log_level: str | None = None,
                  command: tuple[str, list[str]] | None = None) -> AsyncIterator[Client]:
    program, args = command or (f"{BIN}/taskmuxctl", ["mcp"])
    params = StdioServerParameters(
        command=program, args=args, cwd=cwd,
        env={k: env[k] for k in ("TASKMUX_HOME", "TASKMUX_TMUX_SOCKET", "PATH")})

    async def on_log(message: Any) -> None:
        if logs is not None:
            logs.append(message)

    errlog = await asyncio.to_thread(open, os.path.join(env["TASKMUX_HOME"],
                                                        "mcp-server.stderr"), "a")
    try:
        async with Client(stdio_client(params, errlog=errlog), mode=mode,
                          logging_callback=on_log, log_level=log_level,
                          read_timeout_seconds=60) as client:
            yield client
    finally:
        errlog.close()


async def call(client: Client, tool: str, args: dict[str, Any] | None = None
               ) -> tuple[bool, Any, str]:
    result = await client.call_tool(tool, args or {})
    text = result.content[0].text  # type: ignore[union-attr]
    return bool(result.is_error), result.structured_content, text


@pytest.fixture
def shop(env: dict[str, str], tmp_path: Any, daemon: object) -> str:
    return write_project(str(tmp_path / "shop"), """
        name = "shop"
        [tasks.web]
        command = "python3 -m http.server $PORT --bind 127.0.0.1"
        host = "web"
        [tasks.worker]
        command = "while true; do echo tick $(date +%s%N); sleep 0.2; done"
    """)


def test_every_tool_through_the_sdk_at_the_current_revision(env: dict[str, str],
                                                             shop: str) -> None:
    async def scenario() -> None:
        async with session(env, shop) as client:
            assert client.protocol_version == "2026-07-28"
            assert client.server_info is not None and client.server_info.name == "taskmux"
            listed = await client.list_tools()
            assert {t.name for t in listed.tools} == TOOLS
            for tool in listed.tools:
                assert tool.input_schema["type"] == "object" and tool.description

            err, data, _ = await call(client, "start")
            assert not err and {r["task"] for r in data["results"]} == {"web", "worker"}
            err, data, text = await call(client, "status")
            assert not err and data["project"] == "shop" and '"shop"' in text
            assert {t["name"]: t["state"] for t in data["tasks"]} == {"web": "running",
                                                                      "worker": "running"}
            err, data, _ = await call(client, "inspect", {"task": "web"})
            assert not err and data["task"]["config"]["host"] == "web"
            assert data["task"]["url"].startswith("https://web.shop.localhost")

            def ticked() -> bool:
                return "tick" in run_cli(["logs", "worker"], env, cwd=shop).stdout

            wait_until(ticked, 15, "the worker's output")
            err, data, text = await call(client, "logs", {"task": "worker", "lines": 3,
                                                          "grep": "tick", "since": "1h"})
            assert not err and 1 <= len(data["lines"]) <= 3 and "tick" in text
            err, data, _ = await call(client, "logs", {"lines": 50})
            assert not err and all(" | " in line for line in data["lines"])
            err, data, _ = await call(client, "health")
            assert not err and data["total_count"] == 2
            err, data, _ = await call(client, "restart", {"tasks": ["worker"]})
            assert not err and data["results"][0]["action"] == "restarted"
            err, data, _ = await call(client, "events", {"lines": 50})
            kinds = {e["event"] for e in data["events"]}
            assert not err and {"task_started", "task_restarted"} <= kinds
            err, data, _ = await call(client, "list_projects")
            assert not err and [p["name"] for p in data["projects"]] == ["shop"]
            err, data, _ = await call(client, "stop", {"tasks": ["worker"]})
            assert not err and data["results"][0]["action"] == "stopped"

            # Tool errors come back as results the model can read (isError) ...
            err, data, text = await call(client, "inspect", {"task": "ghost"})
            assert err and data["code"] == 111 and "ghost" in text and "web" in text
            err, data, _ = await call(client, "logs", {"task": "ghost"})
            assert err and data["kind"] == "task_not_found"
            err, data, _ = await call(client, "status", {"project": "nope"})
            assert err and data["code"] == 110
            err, data, text = await call(client, "logs", {"lines": "ten"})
            assert err and "'lines' must be a integer" in text
            err, _, text = await call(client, "status", {"bogus": 1})
            assert err and "unknown argument 'bogus'" in text
            err, _, text = await call(client, "events", {"since": "yesterday-ish"})
            assert err
            # ... an unknown tool is a protocol error.
            with pytest.raises(MCPError) as caught:
                await client.call_tool("reboot", {})
            assert caught.value.error.code == -32602 and "reboot" in caught.value.error.message

    asyncio.run(scenario())
    wait_state(env, shop, "worker", "stopped")


def test_a_client_that_opens_with_initialize_gets_state_changes_as_log_messages(
        env: dict[str, str], shop: str) -> None:
    assert run_json(["start"], env, cwd=shop)[0] == 0
    logs: list[Any] = []

    async def scenario() -> None:
        async with session(env, shop, mode="legacy", logs=logs) as client:
            assert client.protocol_version == "2025-11-25"
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            err, data, _ = await call(client, "status")
            assert not err and data["project"] == "shop"
            # A change made elsewhere (the CLI) reaches this client while it is connected.
            await asyncio.to_thread(run_json, ["restart", "worker"], env, shop)
            for _ in range(200):
                if any(m.data.get("event") == "task_restarted" for m in logs):
                    break
                await asyncio.sleep(0.05)

    asyncio.run(scenario())
    restarted = [m for m in logs if m.data.get("event") == "task_restarted"]
    assert restarted, logs
    assert restarted[0].level == "info" and restarted[0].logger == "taskmux"
    assert restarted[0].data["message"].startswith("shop/worker: task_restarted")


def _keep_changing(env: dict[str, str], shop: str, done: threading.Event) -> None:
    """Restart the worker until the waiting call has returned (it may begin to wait a little
    after the first restart)."""
    while not done.wait(0.5):
        run_json(["restart", "worker"], env, cwd=shop)


def test_current_revision_sends_log_messages_only_to_requests_that_ask(
        env: dict[str, str], shop: str) -> None:
    assert run_json(["start"], env, cwd=shop)[0] == 0
    for level in ("info", None):
        logs: list[Any] = []

        async def scenario(level: str | None = level, logs: list[Any] = logs
                           ) -> tuple[bool, Any, str]:
            async with session(env, shop, logs=logs, log_level=level) as client:
                assert client.protocol_version == "2026-07-28"
                done = threading.Event()
                changer = threading.Thread(target=_keep_changing, args=(env, shop, done))
                changer.start()
                try:
                    return await call(client, "events", {"task": "worker",
                                                         "wait_seconds": 30})
                finally:
                    done.set()
                    await asyncio.to_thread(changer.join)

        err, data, _ = asyncio.run(scenario())
        assert not err and data["count"] >= 1
        assert all(e["task"] == "worker" for e in data["events"])
        if level:
            assert any(m.data.get("task") == "worker" for m in logs), logs
        else:
            assert logs == []  # no logLevel in _meta: no notifications/message


def test_without_a_project_here_tools_say_what_to_do(env: dict[str, str], shop: str,
                                                     tmp_path: Any) -> None:
    assert run_json(["daemon", "register"], env, cwd=shop)[0] == 0
    nowhere = str(tmp_path / "nowhere")
    os.makedirs(nowhere)

    async def scenario() -> None:
        async with session(env, nowhere) as client:
            err, data, text = await call(client, "status")
            assert err and "no taskmux.toml" in text and "list_projects" in text
            err, data, _ = await call(client, "logs")
            assert err
            err, data, _ = await call(client, "list_projects")
            assert not err and data["projects"][0]["name"] == "shop"
            err, data, _ = await call(client, "status", {"project": "shop"})
            assert not err and data["config"] == os.path.join(shop, "taskmux.toml")

    asyncio.run(scenario())


def raw_exchange(env: dict[str, str], cwd: str, lines: list[str], expect: int
                 ) -> list[dict[str, Any]]:
    """Hand-written messages for what a well-behaved SDK never sends."""
    import json

    proc = subprocess.Popen([f"{BIN}/taskmuxctl", "mcp"], cwd=cwd, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(line + "\n" for line in lines).encode())
    proc.stdin.flush()
    replies = [json.loads(proc.stdout.readline()) for _ in range(expect)]
    proc.stdin.close()
    assert proc.wait(10) == 0
    rest = proc.stdout.read()
    proc.stdout.close()
    assert rest == b""  # nothing else on stdout
    return replies


def message(req_id: int | None, method: str, params: dict[str, Any] | None = None,
            version: str | None = None, capabilities: bool = True) -> str:
    import json

    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if req_id is not None:
        msg["id"] = req_id
    if version is not None:
        meta: dict[str, Any] = {"io.modelcontextprotocol/protocolVersion": version}
        if capabilities:
            meta["io.modelcontextprotocol/clientCapabilities"] = {}
        params = {**(params or {}), "_meta": meta}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg)


def test_protocol_errors_are_json_rpc_errors(env: dict[str, str], shop: str) -> None:
    now = "2026-07-28"
    replies = raw_exchange(env, shop, [
        "{not json",
        '[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
        message(2, "tools/list"),
        message(3, "tools/list", version="1999-01-01"),
        message(4, "tools/list", version=now, capabilities=False),
        message(5, "resources/list", version=now),
        message(6, "server/discover", version=now),
        # A cancelled call gets no response; the next one does.
        message(7, "tools/call", {"name": "events", "arguments": {"wait_seconds": 30}},
                version=now),
        message(None, "notifications/cancelled", {"requestId": 7}),
        message(8, "tools/list", version=now),
        message(9, "subscriptions/listen", {"notifications": {"toolsListChanged": True}},
                version=now),
        message(None, "notifications/cancelled", {"requestId": 9}),
        message(10, "ping", version=now),
    ], 10)
    acks = [r for r in replies if r.get("method")]
    replies = [r for r in replies if not r.get("method")]
    assert acks == [{"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                     "params": {"notifications": {},
                                "_meta": {"io.modelcontextprotocol/subscriptionId": 9}}}]
    by_id = {r.get("id"): r for r in replies}
    assert replies[0]["error"]["code"] == -32700 and replies[0]["id"] is None
    assert replies[1]["error"]["code"] == -32600
    assert by_id[2]["error"]["code"] == -32602 and "initialize" in by_id[2]["error"]["message"]
    assert by_id[3]["error"]["code"] == -32022
    assert by_id[3]["error"]["data"] == {"supported": ["2026-07-28", "2025-11-25", "2025-06-18",
                                                       "2025-03-26", "2024-11-05"],
                                         "requested": "1999-01-01"}
    assert by_id[4]["error"]["code"] == -32602 and "clientCapabilities" in \
        by_id[4]["error"]["message"]
    assert by_id[5]["error"]["code"] == -32601
    discover = by_id[6]["result"]
    assert discover["supportedVersions"] == ["2026-07-28"]
    assert discover["resultType"] == "complete" and "tools" in discover["capabilities"]
    assert discover["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "taskmux"
    assert "shop" in discover["instructions"]
    assert 7 not in by_id and 9 not in by_id and by_id[10]["result"]["resultType"] == "complete"
    assert by_id[8]["result"]["ttlMs"] > 0
    assert by_id[8]["result"]["cacheScope"] == "public"


def test_initialize_negotiates_the_version_the_client_asks_for(env: dict[str, str],
                                                                shop: str) -> None:
    for asked, got in (("2025-03-26", "2025-03-26"), ("2024-11-05", "2024-11-05"),
                       ("2030-01-01", "2025-11-25")):
        replies = raw_exchange(env, shop, [
            message(1, "initialize", {"protocolVersion": asked, "capabilities": {},
                                      "clientInfo": {"name": "t", "version": "1"}}),
            message(None, "notifications/initialized"),
            message(2, "tools/list"),
        ], 2)
        assert replies[0]["result"]["protocolVersion"] == got
        assert "resultType" not in replies[0]["result"]
        tools = replies[1]["result"]["tools"]
        assert ("annotations" in tools[0]) == (got != "2024-11-05")
        assert ("title" in tools[0]) == (got not in ("2024-11-05", "2025-03-26"))


def test_closing_stdin_answers_the_calls_in_flight(env: dict[str, str], shop: str) -> None:
    """A script that pipes its requests in and closes stdin gets every answer: calls still
    running finish (a wait ends early, with what it has) before the server exits."""
    import json

    now = "2026-07-28"
    lines = [message(1, "tools/call", {"name": "status", "arguments": {}}, version=now),
             message(2, "tools/call", {"name": "events", "arguments": {"wait_seconds": 120}},
                     version=now),
             message(3, "tools/call", {"name": "list_projects", "arguments": {}}, version=now)]
    proc = subprocess.run([f"{BIN}/taskmuxctl", "mcp"], cwd=shop, env=env, capture_output=True,
                          input="".join(line + "\n" for line in lines).encode(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    replies = {r["id"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert sorted(replies) == [1, 2, 3]
    assert all(not r["result"].get("isError") for r in replies.values()), replies
    assert replies[1]["result"]["structuredContent"]["project"] == "shop"
