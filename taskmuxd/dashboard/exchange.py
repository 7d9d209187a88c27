"""A dashboard request and its answer, as ``site.SiteSide`` hands one over and writes the
other back: plain data, so that the dashboard (``app``) is built without the HTTP codec, which
is loaded with the first connection."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes
    client: str  # the proxy's key: "uid N" on loopback, else an address

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Callable[[], AsyncGenerator[bytes, None]] | None = None  # server-sent events


def json_response(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":"), default=str).encode())
