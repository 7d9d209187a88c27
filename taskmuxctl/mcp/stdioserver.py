"""taskmux's MCP server: JSON-RPC 2.0 on stdin/stdout, one message per line.

It speaks the current revision, 2026-07-28 (stateless: every request carries its protocol
version and client capabilities in ``_meta``; ``server/discover`` says what the server offers),
and, for clients that still open with ``initialize``, the earlier revisions 2025-11-25,
2025-06-18, 2025-03-26 and 2024-11-05 (the version the client asks for, when it is one of
those; 2025-11-25 otherwise). Both kinds of client may share one process.

Task state changes reach the client as ``notifications/message``: for a client that opened with
``initialize``, whenever they happen while it is connected (at or above the level set with
``logging/setLevel``, "info" by default); under 2026-07-28, which allows log messages only
during a request that asked for them (``io.modelcontextprotocol/logLevel``), while such a
request runs, for instance ``events`` with ``wait_seconds``.

``subscriptions/listen`` is acknowledged and kept open, quiet: the tool list never changes and
there are no resources or prompts, so there is nothing to subscribe to.

Tool calls run in threads (a restart takes seconds; an ``events`` wait up to minutes), so the
client can cancel them (``notifications/cancelled``) and make other calls meanwhile. Nothing
but protocol messages is written to stdout; diagnostics go to stderr.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from taskmuxctl import __version__
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, RpcError
from taskmuxctl.mcp.eventfeed import LEVELS, Hub, message_params, rank
from taskmuxctl.mcp.tools import BY_NAME, TOOLS, ToolFailure, Tools

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

MODERN_VERSIONS = ("2026-07-28",)
HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
SUPPORTED_VERSIONS = (*MODERN_VERSIONS, *HANDSHAKE_VERSIONS)
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"

TOOLS_TTL_MS = 3_600_000  # the tool list never changes while a server runs
DRAIN_TIMEOUT = 30.0  # seconds for calls in flight to finish once stdin closes


class ProtocolError(RpcError):
    """An MCP request refused with a JSON-RPC error (its codes: ``taskmuxctl.core.protocol``)."""


class Call:
    """A request in progress: a tool call, or an open ``subscriptions/listen``."""

    def __init__(self, log_level: str | None, listen: bool = False) -> None:
        self.log_level = log_level
        self.listen = listen
        self.cancelled = threading.Event()  # the client gave up on it: no response
        self.stop_waiting = threading.Event()  # end a wait early, but still answer
        self.thread: threading.Thread | None = None


def server_info() -> dict[str, str]:
    return {"name": "taskmux", "title": "taskmux", "version": __version__}


def capabilities() -> dict[str, Any]:
    return {"tools": {"listChanged": False}, "logging": {}}


def tool_list(version: str) -> list[dict[str, Any]]:
    """The tools as ``version`` describes them (titles since 2025-06-18, annotations since
    2025-03-26)."""
    out = []
    for tool in TOOLS:
        t = dict(tool)
        if version in ("2024-11-05", "2025-03-26"):
            t.pop("title", None)
        if version == "2024-11-05":
            t.pop("annotations", None)
        out.append(t)
    return out


def tool_result(text: str, data: dict[str, Any], is_error: bool, version: str
                ) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}],
                              "isError": is_error}
    if version not in ("2024-11-05", "2025-03-26"):  # structuredContent since 2025-06-18
        result["structuredContent"] = data
    return result


class Server:
    def __init__(self, paths: Paths, cwd: str, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.write_lock = threading.Lock()
        self.calls: dict[str, Call] = {}
        self.calls_lock = threading.Lock()
        self.legacy_version: str | None = None  # set by initialize
        self.legacy_level = "info"
        self.watched: set[str] = set()
        self.hub = Hub(paths, self.on_event)
        self.tools = Tools(paths, cwd, self.hub, self.watch)
        self.default_project = self.tools.default_project()
        if self.default_project:
            self.watched.add(self.default_project)

    def watch(self, project: str) -> None:
        """Tell the client about this project's task changes too (it named it in a call)."""
        self.watched.add(project)

    def instructions(self) -> str:
        here = (f"Tools act on project {self.default_project!r} (the taskmux.toml of the "
                "server's working directory) unless given a project argument."
                if self.default_project else "No taskmux.toml in the server's working "
                "directory: give tools a project argument (see list_projects).")
        return ("taskmux runs this machine's dev processes (servers, watchers, workers) in "
                "tmux under a supervising daemon. Their state changes on its own: ask status "
                "for live state, logs for a task's output, events for what happened, and use "
                "restart after changing a task's config or dependencies, rather than guessing "
                "or starting processes yourself. " + here)

    # -- the loop ------------------------------------------------------------------------

    def serve(self) -> int:
        self.hub.start()
        for raw in self.stdin:
            line = raw.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError as exc:
                self.send_error(None, Code.PARSE_ERROR, f"Parse error: {exc}")
                continue
            try:
                self.handle(message)
            except Exception as exc:  # never let one message end the session
                sys.stderr.write(f"taskmux mcp: internal error: {exc!r}\n")
                if isinstance(message, dict) and "id" in message and "method" in message:
                    self.send_error(message["id"], Code.INTERNAL_ERROR, f"internal error: {exc}")
        self.drain()
        return 0

    def drain(self) -> None:
        """stdin closed: answer what is in flight before exiting (a script that pipes its
        requests in and closes gets every answer). Waits end now with what they have; a
        subscription stream just ends; a call still running after DRAIN_TIMEOUT is dropped."""
        with self.calls_lock:
            calls = list(self.calls.values())
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for call in calls:
            call.stop_waiting.set()
        for call in calls:
            if call.thread is not None:
                call.thread.join(max(deadline - time.monotonic(), 0))
        for call in calls:
            call.cancelled.set()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self.write_lock:
            self.stdout.write(data)
            self.stdout.flush()

    def send_error(self, req_id: Any, code: int, message: str, data: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self.send({"jsonrpc": "2.0", "id": req_id, "error": error})

    def reply(self, req_id: Any, result: dict[str, Any], modern: bool) -> None:
        if modern:
            result = {**result, "resultType": "complete",
                      "_meta": {META_SERVER_INFO: server_info()}}
        self.send({"jsonrpc": "2.0", "id": req_id, "result": result})

    # -- messages ------------------------------------------------------------------------

    def handle(self, message: Any) -> None:
        if isinstance(message, list):
            self.send_error(None, Code.INVALID_REQUEST, "batches are not supported: send one "
                            "message per line")
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            self.send_error(message.get("id") if isinstance(message, dict) else None,
                            Code.INVALID_REQUEST, 'not a JSON-RPC 2.0 message ("jsonrpc": "2.0")')
            return
        method = message.get("method")
        if not isinstance(method, str):
            return  # a response: this server sends no requests, so nothing waits for one
        params = message.get("params", {})
        if "id" not in message:
            if isinstance(params, dict):
                self.notification(method, params)
            return
        req_id = message["id"]
        try:
            if not isinstance(params, dict):
                raise ProtocolError(Code.INVALID_PARAMS, "params must be an object")
            self.request(req_id, method, params)
        except ProtocolError as exc:
            self.send_error(req_id, exc.code, exc.message, exc.data)

    def notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/cancelled":
            key = json.dumps(params.get("requestId"))
            with self.calls_lock:
                call = self.calls.get(key)
                if call is not None and call.listen:
                    del self.calls[key]  # nothing runs for it: forget it now
            if call is not None:
                call.cancelled.set()
                call.stop_waiting.set()
        # notifications/initialized and anything else: nothing to do

    def request(self, req_id: Any, method: str, params: dict[str, Any]) -> None:
        meta = params.get("_meta")
        if method == "initialize":
            self.initialize(req_id, params)
            return
        if isinstance(meta, dict) and META_VERSION in meta:
            version, log_level = self.check_modern(meta)
            modern = True
        elif self.legacy_version is not None or method == "ping":
            version, log_level, modern = self.legacy_version or HANDSHAKE_VERSIONS[0], None, False
        else:
            raise ProtocolError(Code.INVALID_PARAMS, f"missing {META_VERSION} in params._meta: "
                                "send it (and the client capabilities) with every request "
                                "(protocol 2026-07-28), or open with initialize (earlier "
                                "revisions)", {"supported": list(SUPPORTED_VERSIONS)})
        if method == "server/discover":
            if not modern:
                raise ProtocolError(Code.METHOD_NOT_FOUND, "server/discover is a 2026-07-28 method;"
                                    " this session opened with initialize")
            self.reply(req_id, {"supportedVersions": list(MODERN_VERSIONS),
                                "capabilities": capabilities(),
                                "instructions": self.instructions(), "ttlMs": 0,
                                "cacheScope": "private"}, True)
        elif method == "ping":
            self.reply(req_id, {}, modern)
        elif method == "tools/list":
            result: dict[str, Any] = {"tools": tool_list(version)}
            if modern:
                result.update(ttlMs=TOOLS_TTL_MS, cacheScope="public")
            self.reply(req_id, result, modern)
        elif method == "tools/call":
            self.tools_call(req_id, params, version, modern, log_level)
        elif method == "subscriptions/listen" and modern:
            self.listen(req_id, params)
        elif method == "logging/setLevel" and not modern:
            level = params.get("level")
            if level not in LEVELS:
                raise ProtocolError(Code.INVALID_PARAMS,
                                    f"level must be one of {', '.join(LEVELS)}")
            self.legacy_level = str(level)
            self.reply(req_id, {}, False)
        else:
            raise ProtocolError(Code.METHOD_NOT_FOUND, f"method {method!r} not found")

    def check_modern(self, meta: dict[str, Any]) -> tuple[str, str | None]:
        version = meta.get(META_VERSION)
        if version not in MODERN_VERSIONS:
            raise ProtocolError(Code.UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                                {"supported": list(SUPPORTED_VERSIONS), "requested": version})
        if not isinstance(meta.get(META_CAPABILITIES), dict):
            raise ProtocolError(Code.INVALID_PARAMS, f"missing {META_CAPABILITIES} in params._meta "
                                "(an object; {} when the client has none)")
        level = meta.get(META_LOG_LEVEL)
        if level is not None and level not in LEVELS:
            raise ProtocolError(Code.INVALID_PARAMS, f"{META_LOG_LEVEL} must be one of "
                                f"{', '.join(LEVELS)}")
        return str(version), level

    def initialize(self, req_id: Any, params: dict[str, Any]) -> None:
        asked = params.get("protocolVersion")
        version = asked if asked in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[0]
        self.reply(req_id, {"protocolVersion": version, "capabilities": capabilities(),
                            "serverInfo": server_info(),
                            "instructions": self.instructions()}, False)
        self.legacy_version = str(version)

    def listen(self, req_id: Any, params: dict[str, Any]) -> None:
        """Open a subscription stream. The tool list never changes and there are no resources
        or prompts, so no notification type is honoured: the stream stays open, quiet, until
        the client cancels it (no response then) or stdin closes."""
        if not isinstance(params.get("notifications"), dict):
            raise ProtocolError(Code.INVALID_PARAMS, "notifications must be an object (the "
                                "notification types to receive)")
        with self.calls_lock:
            self.calls[json.dumps(req_id)] = Call(None, listen=True)
        self.send({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                   "params": {"notifications": {},
                              "_meta": {"io.modelcontextprotocol/subscriptionId": req_id}}})

    # -- tools ---------------------------------------------------------------------------

    def tools_call(self, req_id: Any, params: dict[str, Any], version: str, modern: bool,
                   log_level: str | None) -> None:
        name = params.get("name")
        if name not in BY_NAME:
            raise ProtocolError(Code.INVALID_PARAMS, f"unknown tool {name!r}; tools: "
                                f"{', '.join(BY_NAME)}")
        args = params.get("arguments") or {}
        if not isinstance(args, dict):
            raise ProtocolError(Code.INVALID_PARAMS, "arguments must be an object")
        call = Call(log_level)
        key = json.dumps(req_id)
        with self.calls_lock:
            self.calls[key] = call
        call.thread = threading.Thread(target=self.run_tool, name=f"tool {name}", daemon=True,
                                       args=(req_id, key, call, str(name), args, version,
                                             modern))
        call.thread.start()

    def run_tool(self, req_id: Any, key: str, call: Call, name: str, args: dict[str, Any],
                 version: str, modern: bool) -> None:
        try:
            try:
                data, text = self.tools.call(name, args, call.stop_waiting)
                result = tool_result(text, data, False, version)
            except ToolFailure as exc:
                result = tool_result(f"error: {exc.message}", exc.payload(), True, version)
        except Exception as exc:
            sys.stderr.write(f"taskmux mcp: tool {name} failed: {exc!r}\n")
            if not call.cancelled.is_set():
                self.send_error(req_id, Code.INTERNAL_ERROR, f"tool {name} failed: {exc}")
            return
        finally:
            with self.calls_lock:
                self.calls.pop(key, None)
        if not call.cancelled.is_set():  # a cancelled request gets no response
            self.reply(req_id, result, modern)

    # -- notifications -------------------------------------------------------------------

    def on_event(self, e: dict[str, Any]) -> None:
        if e.get("project") not in self.watched:
            return
        params = message_params(e)
        level = rank(params["level"])
        wanted = self.legacy_version is not None and level >= rank(self.legacy_level)
        if not wanted:
            with self.calls_lock:
                wanted = any(c.log_level is not None and level >= rank(c.log_level)
                             for c in self.calls.values())
        if wanted:
            self.send({"jsonrpc": "2.0", "method": "notifications/message", "params": params})
