"""Health probes, all asyncio-native so a hanging probe only costs its own task a timeout.

Precedence per task: ``health_url`` (HTTP GET; status, and a regex on the body when set;
``$PORT`` expanded) → ``health_check`` (a shell command; exit 0 is healthy) → a TCP connect to
``$PORT`` (127.0.0.1 and ::1 both tried) → the process is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import urllib.parse
from dataclasses import dataclass
from typing import Literal

from taskmuxd import privacy

BODY_LIMIT = 1024 * 1024


# How a probe checks a task's health; a result may also come from the task itself (its
# READY=1, a ready_log_line match, a missed watchdog).
ProbeMethod = Literal["http", "command", "tcp", "process"]
ResultMethod = ProbeMethod | Literal["notify", "log", "watchdog"]


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    method: ResultMethod
    detail: str  # what was checked, or why it failed


@dataclass(frozen=True)
class ProbeSpec:
    url: str | None
    expected_status: int
    expected_body: str | None
    command: str | None
    port: int | None
    pid: int | None
    timeout: float
    env: dict[str, str]
    cwd: str

    @property
    def method(self) -> ProbeMethod:
        if self.url:
            return "http"
        if self.command:
            return "command"
        if self.port:
            return "tcp"
        return "process"


async def probe(spec: ProbeSpec) -> ProbeResult:
    method = spec.method
    try:
        async with asyncio.timeout(spec.timeout):
            if method == "http":
                return await _http(spec)
            if method == "command":
                return await _command(spec)
            if method == "tcp":
                return await _tcp(spec.port or 0)
            return _process(spec.pid)
    except TimeoutError:
        return ProbeResult(False, method, f"no answer within {spec.timeout:g}s")


def expand_port(url: str, port: int | None) -> str:
    if port is None:
        return url
    return url.replace("${PORT}", str(port)).replace("$PORT", str(port))


async def _http(spec: ProbeSpec) -> ProbeResult:
    url = expand_port(spec.url or "", spec.port)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ProbeResult(False, "http", f"not an http(s) URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    hosts = [parts.hostname]
    if parts.hostname == "localhost":
        hosts = ["127.0.0.1", "::1"]
    last_error = ""
    for host in hosts:
        try:
            status, body = await _get(host, port, parts, target)
        except OSError as exc:
            last_error = f"{url}: {exc.strerror or exc}"
            continue
        if status != spec.expected_status:
            return ProbeResult(False, "http", f"{url} answered {status}, expected "
                               f"{spec.expected_status}")
        if spec.expected_body and not re.search(spec.expected_body, body):
            return ProbeResult(False, "http", f"{url} answered {status} but the body does not "
                               f"match {spec.expected_body!r}")
        return ProbeResult(True, "http", f"{url} answered {status}")
    return ProbeResult(False, "http", last_error or f"{url}: cannot connect")


async def _get(host: str, port: int, parts: urllib.parse.SplitResult,
               target: str) -> tuple[int, str]:
    ssl_ctx = None
    if parts.scheme == "https":
        import ssl

        ssl_ctx = ssl.create_default_context()
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl_ctx, server_hostname=parts.hostname if ssl_ctx else None)
    try:
        host_header = parts.netloc.rsplit("@", 1)[-1]
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: "
                     "taskmux-health\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split()
        if len(fields) < 2 or not fields[1].isdigit():
            raise OSError(f"not an HTTP response: {status_line!r}")
        headers = head.decode("latin-1").lower()
        if "transfer-encoding: chunked" in headers:
            raw = await _read_chunked(reader)
        else:
            raw = await reader.read(BODY_LIMIT)
            while len(raw) < BODY_LIMIT:
                more = await reader.read(BODY_LIMIT - len(raw))
                if not more:
                    break
                raw += more
        return int(fields[1]), raw.decode("utf-8", "replace")
    except asyncio.IncompleteReadError as exc:
        raise OSError("the connection closed before a full response") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while len(out) < BODY_LIMIT:
        size_line = await reader.readline()
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += await reader.readexactly(size)
        await reader.readline()
    return bytes(out)


async def _command(spec: ProbeSpec) -> ProbeResult:
    cmd = spec.command or ""
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", cmd, cwd=spec.cwd, env=spec.env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True, umask=privacy.child_umask())
    try:
        out, _ = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    if proc.returncode == 0:
        return ProbeResult(True, "command", f"`{cmd}` exited 0")
    tail = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
    return ProbeResult(False, "command", f"`{cmd}` exited {proc.returncode}"
                       + (f": {tail[0][:200]}" if tail[0] else ""))


async def _tcp(port: int) -> ProbeResult:
    errors = []
    for host in ("127.0.0.1", "::1"):
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            errors.append(f"{host}: {exc.strerror or exc}")
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return ProbeResult(True, "tcp", f"port {port} accepts connections on {host}")
    return ProbeResult(False, "tcp", f"port {port} refuses connections ({'; '.join(errors)})")


def _process(pid: int | None) -> ProbeResult:
    if pid is None:
        return ProbeResult(False, "process", "no process")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ProbeResult(False, "process", f"process {pid} is gone")
    except PermissionError:
        pass
    return ProbeResult(True, "process", f"process {pid} is alive")
