"""JSON-RPC 2.0 conformance and error mapping, in process: the real dispatcher, parameter
checks and error translation in front of RPC namespaces built from fakes (no daemon, no
socket). The end-to-end checks over the real control socket are in tests/test_rpc.py and
tests/test_rpc_hostile.py."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import types
from collections.abc import Mapping
from typing import Any

import pytest

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, Method, RpcError
from tests.rpc_inprocess import FakeDaemon, InProcessRpc, lines
from tests.test_rpc_hostile import SHAPES, assert_response, check_replies, enc, req


@pytest.fixture
def daemon_ns(tmp_path: Any) -> FakeDaemon:
    from taskmuxctl.core.settings import Settings

    return FakeDaemon(Paths(str(tmp_path)), Settings())


@pytest.fixture
def rpc(daemon_ns: FakeDaemon) -> InProcessRpc:
    from taskmuxd.handlers.daemon import DaemonMethods

    return InProcessRpc(DaemonMethods(daemon_ns))


def _stub_projects() -> Any:
    """Enough of ``Projects`` for the project namespace's parameter checks, which run before
    any handler (and so before the wait for adoption)."""
    return types.SimpleNamespace(started=asyncio.Event())


# -- the daemon namespace through the dispatcher ---------------------------------------------


def test_daemon_methods_answer_from_what_they_are_given(rpc: InProcessRpc,
                                                        daemon_ns: FakeDaemon) -> None:
    assert rpc.call("daemon.ping") == {"pong": True}
    assert rpc.call("daemon.version")["protocol"] == 1
    daemon_ns.sections = {"disk": {"full": False, "summary": "fine"}}
    daemon_ns.rpc.in_flight, daemon_ns.rpc.calls_served = 3, 41
    status = rpc.call("daemon.status")
    assert status["pid"] == os.getpid()
    assert status["socket"] == daemon_ns.paths.socket and status["home"] == daemon_ns.paths.home
    assert status["ready"] is False  # no ready_at yet
    assert status["calls_in_flight"] == 2 and status["calls_served"] == 41
    assert status["disk"] == {"full": False, "summary": "fine"}
    daemon_ns.ready_at = 1.0
    assert rpc.call("daemon.status")["ready"] is True
    daemon_ns.stopping = True
    assert rpc.call("daemon.status")["ready"] is False
    assert rpc.call("daemon.shutdown") == {"stopping": True, "pid": os.getpid()}
    assert daemon_ns.shutdowns == 1


def test_config_methods_read_the_current_settings(rpc: InProcessRpc,
                                                  daemon_ns: FakeDaemon) -> None:
    from taskmuxctl.core.settings import Settings

    got = rpc.call("config.get")
    assert got["path"] == daemon_ns.paths.config
    assert got["config"]["log_level"] == Settings().log_level
    daemon_ns.reloads.append(Settings(log_level="debug"))
    assert rpc.call("config.reload")["config"]["log_level"] == "debug"
    assert rpc.call("config.get")["config"]["log_level"] == "debug"


def test_the_early_and_the_started_status_have_the_same_keys(rpc: InProcessRpc,
                                                             daemon_ns: FakeDaemon) -> None:
    from taskmuxd.daemonstatus import core_status

    early = core_status(daemon_ns.paths, 0.0, 0.0, stopping=False, ready=False, in_flight=1,
                        calls_served=0)
    assert set(rpc.call("daemon.status")) == set(early)


# -- conformance (as tests/test_rpc.py did over the socket) -------------------------------


def test_parse_error(rpc: InProcessRpc) -> None:
    [reply] = rpc.exchange(b'{"jsonrpc": "2.0", "method": \n')
    assert reply["error"]["code"] == Code.PARSE_ERROR
    assert reply["id"] is None
    [reply] = rpc.exchange(b"\xff\xfe\n")
    assert reply["error"]["code"] == Code.PARSE_ERROR


def test_invalid_requests(rpc: InProcessRpc) -> None:
    bad = [
        {"method": "daemon.ping", "id": 1},  # no jsonrpc
        {"jsonrpc": "1.0", "method": "daemon.ping", "id": 2},
        {"jsonrpc": "2.0", "method": 5, "id": 3},
        {"jsonrpc": "2.0", "method": "daemon.ping", "params": "x", "id": 4},
        {"jsonrpc": "2.0", "method": "daemon.ping", "id": {"a": 1}},
        {"jsonrpc": "2.0", "method": "daemon.ping", "id": 5, "extra": True},
        "just a string",
        42,
    ]
    replies = rpc.exchange(lines(bad))
    assert len(replies) == len(bad)
    for reply in replies:
        assert reply["jsonrpc"] == "2.0"
        assert reply["error"]["code"] == Code.INVALID_REQUEST
        assert reply["id"] is None


def test_unknown_method_and_bad_params(rpc: InProcessRpc) -> None:
    msgs = [
        {"jsonrpc": "2.0", "method": "no.such", "id": "a"},
        {"jsonrpc": "2.0", "method": "daemon.ping", "params": {"delay": "soon"}, "id": "b"},
        {"jsonrpc": "2.0", "method": "daemon.ping", "params": {"bogus": 1}, "id": "c"},
        {"jsonrpc": "2.0", "method": "daemon.ping", "params": [1, 2, 3], "id": "d"},
    ]
    replies = {r["id"]: r for r in rpc.exchange(lines(msgs))}
    assert replies["a"]["error"]["code"] == Code.METHOD_NOT_FOUND
    assert replies["b"]["error"]["code"] == Code.INVALID_PARAMS
    assert "delay" in replies["b"]["error"]["message"]
    assert replies["c"]["error"]["code"] == Code.INVALID_PARAMS
    assert replies["d"]["error"]["code"] == Code.INVALID_PARAMS


def test_positional_params_work(rpc: InProcessRpc) -> None:
    [reply] = rpc.exchange(lines([{"jsonrpc": "2.0", "method": "daemon.ping", "params": [0],
                                   "id": 9}]))
    assert reply == {"jsonrpc": "2.0", "result": {"pong": True}, "id": 9}


def test_batches(rpc: InProcessRpc) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "daemon.ping", "id": 1},
        {"jsonrpc": "2.0", "method": "daemon.ping"},  # notification: no reply
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "nope", "id": "5"},
        1,
    ]
    [replies] = rpc.exchange(lines([batch]))
    assert isinstance(replies, list) and len(replies) == 4
    by_id = {r["id"]: r for r in replies if r["id"] is not None}
    assert by_id[1]["result"] == {"pong": True}
    assert by_id["5"]["error"]["code"] == Code.METHOD_NOT_FOUND
    invalid = [r for r in replies if r["id"] is None]
    assert [r["error"]["code"] for r in invalid] == [Code.INVALID_REQUEST] * 2
    [reply] = rpc.exchange(b"[]\n")  # one Invalid Request, not an empty array
    assert reply["error"]["code"] == Code.INVALID_REQUEST


def test_notifications_get_no_reply(rpc: InProcessRpc) -> None:
    payload = lines([{"jsonrpc": "2.0", "method": "daemon.ping"},
                     [{"jsonrpc": "2.0", "method": "daemon.ping"},
                      {"jsonrpc": "2.0", "method": "no.such"}],
                     {"jsonrpc": "2.0", "method": "daemon.ping", "id": "last"}])
    assert [r["id"] for r in rpc.exchange(payload)] == ["last"]


def test_every_malformed_shape_gets_a_well_formed_reply(daemon_ns: FakeDaemon) -> None:
    """tests/test_rpc_hostile.py's table of hostile messages, every one of them."""
    from taskmuxd.handlers.daemon import DaemonMethods
    from taskmuxd.handlers.projects import ProjectMethods

    with_projects = InProcessRpc(DaemonMethods(daemon_ns),
                                 ProjectMethods(_stub_projects(), types.SimpleNamespace(),
                                                lambda: None))
    for label, payload, expect, code in SHAPES:
        check_replies(label, with_projects.exchange(payload + b"\n"), expect, code)


def test_params_errors_name_the_parameter_and_its_range(rpc: InProcessRpc) -> None:
    for delay in (61, -1, 1e308):
        [reply] = rpc.exchange(enc(req({"delay": delay})) + b"\n")
        message = reply["error"]["message"]
        assert reply["error"]["code"] == Code.INVALID_PARAMS
        assert "delay" in message and "from 0 to 60" in message, message
        assert reply["error"]["data"][0]["param"] == "delay"
    [reply] = rpc.exchange(b'{"jsonrpc":"2.0","method":"daemon.ping","id":1,'
                           b'"params":{"delay":NaN}}\n')
    assert reply["error"]["code"] == Code.PARSE_ERROR
    assert "NaN" in reply["error"]["data"] and "finite" in reply["error"]["data"]
    [reply] = rpc.exchange(enc(req({"delay": 0})) + b"\n")
    assert reply["result"] == {"pong": True}


def test_project_params_are_checked_before_the_wait_for_adoption() -> None:
    """The project namespace waits for the start's adoption before a method runs; bad params
    are refused before that wait (the stub's ``started`` is never set)."""
    from taskmuxd.handlers.projects import ProjectMethods

    rpc = InProcessRpc(ProjectMethods(_stub_projects(), types.SimpleNamespace(), lambda: None))
    [reply] = rpc.exchange(enc(req({"project": "p", "tasks": "web"}, "project.stop")) + b"\n")
    assert reply["error"]["code"] == Code.INVALID_PARAMS
    assert reply["error"]["data"][0]["param"] == "tasks"
    assert set(rpc.table.names()) >= {Method.PROJECT_STATUS, Method.TASK_SEND,
                                      Method.PROJECT_TMUX, Method.RUNNER_EXITED}


# -- error mapping ------------------------------------------------------------------------


class Faults:
    """A namespace whose methods fail each way a handler can."""

    def handlers(self) -> Mapping[str, Any]:
        return {"fault.client": self.client, "fault.task": self.task,
                "fault.daemon": self.daemon, "fault.disk": self.disk, "fault.os": self.os,
                "fault.bug": self.bug, "fault.nan": self.nan, "fault.rpc": self.rpc}

    async def client(self) -> None:
        from taskmuxctl.core.errors import ClientError

        raise ClientError("no such project", {"project": "x"}, code=Code.PROJECT_NOT_FOUND)

    async def task(self) -> None:
        from taskmuxctl.core.errors import TaskError

        raise TaskError("before_start failed", code=Code.HOOK_FAILED)

    async def daemon(self) -> None:
        from taskmuxctl.core.errors import DaemonError

        raise DaemonError("tmux is not answering", code=Code.TMUX_UNAVAILABLE)

    async def disk(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/state/run.json")

    async def os(self) -> None:
        raise OSError(errno.EACCES, "Permission denied", "/state/run.json")

    async def bug(self) -> None:
        raise ValueError("a bug")

    async def nan(self) -> dict[str, float]:
        return {"x": float("nan")}

    async def rpc(self) -> None:
        raise RpcError(Code.SHUTTING_DOWN, "the daemon is stopping", {"retry": True})


@pytest.mark.parametrize(("method", "code", "message", "data"), [
    ("fault.client", Code.PROJECT_NOT_FOUND, "no such project", {"project": "x"}),
    ("fault.task", Code.HOOK_FAILED, "before_start failed", None),
    ("fault.daemon", Code.TMUX_UNAVAILABLE, "tmux is not answering", None),
    ("fault.rpc", Code.SHUTTING_DOWN, "the daemon is stopping", {"retry": True}),
    ("fault.disk", Code.DISK_FULL, None, {"path": "/state/run.json"}),
])
def test_errors_become_their_stable_codes(method: str, code: int, message: str | None,
                                          data: Any) -> None:
    rpc = InProcessRpc(Faults())
    [reply] = rpc.exchange(enc(req(method=method, rid="r")) + b"\n")
    assert_response(reply)
    assert reply["id"] == "r"
    assert reply["error"]["code"] == code
    if message is not None:
        assert reply["error"]["message"] == message
    assert reply["error"].get("data") == data
    if method == "fault.disk":
        assert "/state/run.json" in reply["error"]["message"]


@pytest.mark.parametrize("method", ["fault.os", "fault.bug", "fault.nan"])
def test_anything_else_is_an_internal_error_with_the_callers_id(method: str) -> None:
    rpc = InProcessRpc(Faults())
    [reply] = rpc.exchange(enc(req(method=method, rid=7)) + b"\n")
    assert_response(reply)
    assert reply["id"] == 7
    assert reply["error"]["code"] == Code.INTERNAL_ERROR


def test_a_method_name_registered_twice_is_refused() -> None:
    from taskmuxd.handlers.daemon import DaemonMethods

    daemon = FakeDaemon(Paths("/nonexistent"), None)
    with pytest.raises(ValueError, match=r"daemon\.ping registered twice"):
        InProcessRpc(DaemonMethods(daemon), DaemonMethods(daemon))


def test_replies_are_one_line_of_strict_json(rpc: InProcessRpc) -> None:
    raw = asyncio.run(rpc.dispatcher.handle(json.dumps(req()).encode()))
    assert raw is not None and raw.endswith(b"\n") and b"\n" not in raw[:-1]


def test_one_set_of_error_codes() -> None:
    """The MCP server and the daemon answer with the codes of ``taskmuxctl.core.protocol``: no
    module defines JSON-RPC codes of its own."""
    import taskmuxctl.mcp.stdioserver as mcp_server
    from taskmuxctl.core.protocol import ERRORS

    with_codes = [mcp_server]
    with_codes += [__import__(name, fromlist=["_"]) for name in (
        "taskmuxd.rpc.dispatch", "taskmuxd.rpc.registration", "taskmuxd.rpc.params",
        "taskmuxd.rpc.early", "taskmuxd.rpc.ctlsocket")]
    for module in with_codes:
        own = {name: value for name, value in vars(module).items()
               if isinstance(value, int) and not isinstance(value, bool)
               and -32768 <= value <= -32000}
        assert not own, (module.__name__, own)
    assert Code.UNSUPPORTED_PROTOCOL_VERSION in ERRORS
    assert issubclass(mcp_server.ProtocolError, RpcError)


# Methods whose results have no shared shape: runner reports (notifications), the panes and
# keys of ``project.tmux``/``task.send``, ``daemon.status`` (a section per subsystem),
# ``project.reload``.
UNTYPED_RESULTS = {Method.DAEMON_STATUS, Method.PROJECT_RELOAD, Method.TASK_SEND,
                   Method.PROJECT_TMUX, Method.RUNNER_STARTED, Method.RUNNER_EXITED,
                   Method.RUNNER_NOTIFY}


def _updater(paths: Paths, settings: Any, restart: Any = lambda: None) -> Any:
    from taskmuxctl.core.eventlog import EventLog
    from taskmuxd.updater import AutoUpdater

    return AutoUpdater(paths, lambda: settings, EventLog(paths.events), stopping=lambda: False,
                       request_restart=restart)


def _network(routes: Any, settings: Any) -> Any:
    """The ``ca.*``, ``dns.*`` and ``routes.*`` namespace, with a proxy that is not bound."""
    from taskmuxd.handlers.network import ProxyMethods

    proxy = types.SimpleNamespace(url_for=lambda b: f"https://{b.hostname(routes.tld)}/",
                                  status=lambda: {"https_port": None})
    return ProxyMethods(proxy, routes, lambda: {"port": None, "bound": False},
                        lambda: settings)


def _all_handlers(daemon: FakeDaemon) -> dict[str, Any]:
    """Plain handlers of every namespace with shared shapes (unwrapped from the checks):
    daemon, config, project, task, health, ca, dns, routes, events and update."""
    from taskmuxd.eventstream import EventMethods
    from taskmuxd.handlers.daemon import DaemonMethods
    from taskmuxd.handlers.projects import ProjectMethods
    from taskmuxd.routes import RouteTable

    return {**DaemonMethods(daemon).handlers(),
            **ProjectMethods(_stub_projects(), types.SimpleNamespace(),
                             lambda: None).handlers(),
            **_network(RouteTable(), daemon.settings).handlers(),
            **EventMethods(types.SimpleNamespace()).handlers(),
            **_updater(daemon.paths, daemon.settings).handlers()}


def test_the_shared_param_shapes_are_the_handlers_parameters(daemon_ns: FakeDaemon) -> None:
    import inspect

    from taskmuxctl.core.rpctypes import PARAMS

    handlers = _all_handlers(daemon_ns)
    assert PARAMS
    for method, shape in PARAMS.items():
        params = inspect.signature(handlers[method]).parameters
        keys = shape.__required_keys__ | shape.__optional_keys__  # type: ignore[attr-defined]
        assert set(params) == keys, method
        required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
        assert required == shape.__required_keys__, method  # type: ignore[attr-defined]


def test_the_shared_result_shapes_are_what_the_handlers_return(daemon_ns: FakeDaemon,
                                                               rpc: InProcessRpc) -> None:
    import typing

    from taskmuxctl.core.rpctypes import RESULTS

    handlers = _all_handlers(daemon_ns)
    assert RESULTS
    for method, shape in RESULTS.items():
        assert typing.get_type_hints(handlers[method])["return"] is shape, method
    # And what comes over the wire has the declared keys.
    for method in ("daemon.ping", "daemon.version", "daemon.shutdown", "config.get"):
        shape = RESULTS[method]
        assert set(rpc.call(method)) == shape.__required_keys__, method  # type: ignore
    untyped = sorted(m for m in handlers if m not in RESULTS and m not in UNTYPED_RESULTS)
    assert not untyped, f"declare their results in rpctypes.RESULTS: {untyped}"


def test_the_network_and_update_results_have_their_declared_keys(daemon_ns: FakeDaemon
                                                                 ) -> None:
    from taskmuxctl.core.rpctypes import RESULTS, Route
    from taskmuxd.routes import Backend, RouteTable

    routes = RouteTable()
    routes.set_project("shop", [Backend("shop", "web", "www", 4100, "running", True),
                                Backend("shop", "api", "*", None, "backoff", False)])
    rpc = InProcessRpc(_network(routes, daemon_ns.settings), _updater(daemon_ns.paths,
                                                                      daemon_ns.settings))
    for method in ("dns.info", "routes.list", "update.status"):
        shape = RESULTS[method]
        assert set(rpc.call(method)) == shape.__required_keys__, method  # type: ignore
    listed = rpc.call("routes.list")["routes"]
    assert [(r["task"], r["state"], r["name"]) for r in listed] == [
        ("web", "running", "www.shop.localhost"), ("api", "backoff", None)]
    assert all(set(r) == Route.__required_keys__ for r in listed)
    assert rpc.call("dns.info")["hostnames"] == ["shop.localhost", "www.shop.localhost"]


def test_the_update_namespace_is_built_from_callbacks_not_the_daemon(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``update.restart`` asks for a restart through the callback it was given, and only
    under a service manager; otherwise its refusal has the stable code."""
    from taskmuxctl.core.eventlog import EventLog
    from taskmuxctl.core.settings import Settings
    from taskmuxd.updater import AutoUpdater

    paths, settings = Paths(str(tmp_path)), Settings()
    restarts: list[bool] = []
    updater = AutoUpdater(paths, lambda: settings, EventLog(paths.events), stopping=lambda: False,
                          request_restart=lambda: restarts.append(True))
    rpc = InProcessRpc(updater)
    for name in ("INVOCATION_ID", "XPC_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TASKMUX_SUPERVISED", raising=False)
    with pytest.raises(RpcError) as caught:
        rpc.call("update.restart")
    assert caught.value.code == Code.UPDATE_NOT_SUPERVISED and restarts == []
    monkeypatch.setenv("TASKMUX_SUPERVISED", "runit")
    assert rpc.call("update.restart") == {"restarting": True, "pid": os.getpid(),
                                          "manager": "runit"}
    assert restarts == [True]
    assert rpc.call("update.status")["auto_update"] == settings.auto_update
