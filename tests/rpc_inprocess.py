"""The daemon's JSON-RPC door without a daemon: a method table built from RPC namespaces (each
made from fakes of the narrow things it uses) behind the real ``Dispatcher``, fed request lines
as the control socket would feed them. Conformance and error-mapping tests run here in
milliseconds; a few tests keep the real socket end to end (tests/test_rpc.py)."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import LineFramer, RpcError

with warnings.catch_warnings():  # jsonrpcserver uses a deprecated importlib.resources call
    warnings.simplefilter("ignore", DeprecationWarning)
    from taskmuxd.rpc.dispatch import Dispatcher
    from taskmuxd.rpc.registration import MethodTable, Namespace


def _not_json(name: str) -> Any:
    raise AssertionError(f"the reply holds {name}, which is not JSON")


def strict(raw: bytes) -> Any:
    """Parse a reply line as strict JSON (NaN/Infinity are not JSON)."""
    return json.loads(raw, parse_constant=_not_json)


class InProcessRpc:
    """A method table of ``namespaces`` behind a ``Dispatcher``."""

    def __init__(self, *namespaces: Namespace) -> None:
        self.table = MethodTable()
        for namespace in namespaces:
            self.table.include(namespace)
        self.dispatcher = Dispatcher(self.table.as_dict)

    async def replies(self, payload: bytes) -> list[Any]:
        """Every reply to the lines of ``payload``, in order (none for a notification)."""
        out = []
        for line in LineFramer().feed(payload):
            reply = await self.dispatcher.handle(line)
            if reply is not None:
                assert reply.endswith(b"\n") and reply.count(b"\n") == 1, reply
                out.append(strict(reply))
        return out

    def exchange(self, payload: bytes) -> list[Any]:
        return asyncio.run(self.replies(payload))

    def call(self, method: str, params: dict[str, Any] | list[Any] | None = None) -> Any:
        """The result of one call; an error reply raises RpcError."""
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            msg["params"] = params
        [reply] = self.exchange(json.dumps(msg).encode() + b"\n")
        if "error" in reply:
            err = reply["error"]
            raise RpcError(err["code"], err["message"], err.get("data"))
        return reply["result"]


@dataclass
class Counts:
    in_flight: int = 1  # the status call itself
    calls_served: int = 0


@dataclass
class FakeDaemon:
    """What ``DaemonMethods`` uses of the daemon (``methods_daemon.DaemonControl``)."""

    paths: Paths
    settings: Any
    started_monotonic: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    stopping: bool = False
    ready_at: float | None = None
    rpc: Counts = field(default_factory=Counts)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    shutdowns: int = 0
    reloads: list[Any] = field(default_factory=list)

    def subsystem_statuses(self) -> dict[str, dict[str, Any]]:
        return dict(self.sections)

    def request_shutdown(self) -> None:
        self.shutdowns += 1

    def reload_settings(self) -> Any:
        new = self.reloads.pop(0)
        self.settings = new
        return new


def lines(messages: Iterable[Any]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)
