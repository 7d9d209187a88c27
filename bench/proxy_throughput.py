"""Requests per second and median latency through the HTTPS proxy against the backend
directly, side by side in one run: small responses, keep-alive, measured by wrk.

Run by hand as root: `.venv/bin/python bench/proxy_throughput.py`. Target: through the proxy
at least 70% of the requests per second of the backend directly.

Backends stand in for tasks: `stdlib` (Python's threading http.server speaking HTTP/1.1),
`node` (Node's http module, what Next.js/Vite dev servers sit on; when node is installed), and
`asyncio` (a minimal asyncio server writing a canned response: the hardest case for the proxy,
since the backend itself costs almost nothing). wrk runs in
a private mount namespace where a bind-mounted hosts file resolves the task's name, so the
machine's /etc/hosts is never touched and TLS carries the real server name (SNI).

With `--reference nginx` (when nginx is installed) the same backend is also measured through
nginx terminating TLS with the same certificate, one worker process like taskmux's one event
loop, upstream keep-alive on: what a C proxy manages on this machine, so the ratio can be read
against what is possible here and not only against the target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PYTHON, private_daemon

BODY = b"Hello, world\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
NAME = "web.bench.localhost"


# -- the backends (run in their own process) ------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as dev servers do; else each answer waits ~40 ms

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Threading(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # wrk resets its connections when it stops


class _Fixed(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        count = self.buf.count(b"\r\n\r\n")
        if count:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * count)  # type: ignore[attr-defined]


def write_port(port_file: str, port: int) -> None:
    with open(port_file + ".tmp", "w") as fh:
        fh.write(str(port))
    os.replace(port_file + ".tmp", port_file)


def read_port(port_file: str) -> int | None:
    try:
        with open(port_file) as fh:
            return int(fh.read())
    except (FileNotFoundError, ValueError):
        return None


def serve(kind: str, port_file: str) -> None:
    if kind == "stdlib":
        server = _Threading(("127.0.0.1", 0), _Handler)
        write_port(port_file, int(server.server_address[1]))
        server.serve_forever()
        return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Fixed, "127.0.0.1", 0)
        write_port(port_file, server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


NODE_SERVER = """
const http = require('http'), fs = require('fs');
const server = http.createServer((req, res) => {
  res.writeHead(200, {'Content-Type': 'text/plain'}); res.end('Hello, world\\n'); });
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(process.argv[1] + '.tmp', String(server.address().port));
  fs.renameSync(process.argv[1] + '.tmp', process.argv[1]); });
"""


@contextlib.contextmanager
def backend(kind: str) -> Iterator[int]:
    folder = tempfile.mkdtemp(prefix="tmxb-")
    port_file = os.path.join(folder, "port")
    if kind == "node":
        argv = ["node", "-e", NODE_SERVER, port_file]
    else:
        argv = [PYTHON, os.path.abspath(__file__), "--serve", kind, port_file]
    proc = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 10
        while (port := read_port(port_file)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the backend did not start")
            time.sleep(0.02)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


# -- talking to the daemon ------------------------------------------------------------------

def rpc(sock_path: str, method: str, params: dict[str, object] | None = None) -> dict:  # type: ignore[type-arg]
    msg = {"jsonrpc": "2.0", "method": method, "id": 1, "params": params or {}}
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.sendall(json.dumps(msg).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            buf += s.recv(65536)
    reply = json.loads(buf)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply["result"]  # type: ignore[no-any-return]


# -- the reference proxy ----------------------------------------------------------------------

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https;
    }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def nginx(backend_port: int, cert: str, key: str) -> Iterator[int]:
    folder = tempfile.mkdtemp(prefix="tmxb-nginx-")
    port = free_port()
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as fh:
        fh.write(NGINX_CONF.format(folder=folder, backend=backend_port, port=port, cert=cert,
                                   key=key))
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", folder])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"nginx did not start (see {folder}/error.log)") from exc
                time.sleep(0.02)
        yield port
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


# -- wrk --------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, connections: int, seconds: float, hosts_file: str | None) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    if hosts_file:  # resolve the task's name in a private mount namespace only
        cmd = f"mount --bind {hosts_file} /etc/hosts && exec {' '.join(argv)}"
        argv = ["unshare", "-m", "sh", "-c", cmd]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p50 = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        raise RuntimeError(f"wrk saw errors: {errors.group(0)}\n{out}")
    return {"rps": rps, "p50_ms": p50}


def measure(kind: str, proxy_port: int, sock: str, hosts_file: str, args: argparse.Namespace
            ) -> dict[str, float]:
    with backend(kind) as port:
        rpc(sock, "routes.set", {"project": "bench", "backends": [
            {"task": "web", "host": "web", "port": port, "state": "running", "ready": True}]})
        direct_url = f"http://127.0.0.1:{port}/"
        proxy_url = f"https://{NAME}:{proxy_port}/"
        wrk(direct_url, args.connections, 1, None)  # warm up both paths
        wrk(proxy_url, args.connections, 1, hosts_file)
        rows: dict[str, list[float]] = {"direct_rps": [], "proxy_rps": [], "direct_p50": [],
                                        "proxy_p50": []}
        for _ in range(args.rounds):  # alternate, so noise from other load hits both
            d = wrk(direct_url, args.connections, args.seconds, None)
            p = wrk(proxy_url, args.connections, args.seconds, hosts_file)
            rows["direct_rps"].append(d["rps"])
            rows["proxy_rps"].append(p["rps"])
            # Latency of one request at a time on one kept-alive connection.
            d1 = wrk(direct_url, 1, args.seconds / 2, None)
            p1 = wrk(proxy_url, 1, args.seconds / 2, hosts_file)
            rows["direct_p50"].append(d1["p50_ms"])
            rows["proxy_p50"].append(p1["p50_ms"])
        if args.reference == "nginx":
            leaf = rpc(sock, "ca.mint", {"project": "bench"})["minted"][0]
            with nginx(port, leaf["cert"], leaf["key"]) as nginx_port:
                nginx_url = f"https://{NAME}:{nginx_port}/"
                wrk(nginx_url, args.connections, 1, hosts_file)
                rows["nginx_rps"] = [wrk(nginx_url, args.connections, args.seconds,
                                         hosts_file)["rps"] for _ in range(args.rounds)]
    return {k: statistics.median(v) for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT_FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--backends",
                        default="stdlib,node,asyncio" if shutil.which("node") else "stdlib,asyncio")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference", choices=("none", "nginx"),
                        default="nginx" if shutil.which("nginx") else "none",
                        help="also measure this proxy on the same backend (default: nginx "
                             "when installed)")
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    for tool in ("wrk", "unshare"):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool} (Debian: apt install wrk util-linux)")
    if os.geteuid() != 0:
        sys.exit("run as root: wrk resolves the task's name in a private mount namespace")
    folder = tempfile.mkdtemp(prefix="tmxb-")
    hosts_file = os.path.join(folder, "hosts")
    with open(hosts_file, "w") as fh:
        fh.write(f"127.0.0.1 localhost\n127.0.0.1 {NAME}\n")
    try:
        with private_daemon({"TASKMUX_TEST_HOOKS": "1"}) as (home, _env):
            sock = os.path.join(home, "ctl.sock")
            while True:
                try:
                    proxy_port = rpc(sock, "daemon.status")["proxy"]["https_port"]
                    break
                except (OSError, ValueError):
                    time.sleep(0.05)
            print(f"keep-alive, {args.connections} connections, {args.seconds:g}s x "
                  f"{args.rounds} rounds (medians); latency: 1 connection, 1 request at a time")
            print(f"{'backend':<9}{'direct req/s':>14}{'proxy req/s':>13}{'ratio':>8}"
                  f"{'direct p50':>12}{'proxy p50':>11}{'added':>9}")
            for kind in args.backends.split(","):
                r = measure(kind, proxy_port, sock, hosts_file, args)
                ratio = r["proxy_rps"] / r["direct_rps"]
                added = r["proxy_p50"] - r["direct_p50"]
                print(f"{kind:<9}{r['direct_rps']:>14,.0f}{r['proxy_rps']:>13,.0f}"
                      f"{ratio:>7.0%} {r['direct_p50']:>9.3f}ms{r['proxy_p50']:>9.3f}ms"
                      f"{added:>7.3f}ms")
                if "nginx_rps" in r:
                    print(f"{'':<9}{'via nginx':>14}{r['nginx_rps']:>13,.0f}"
                          f"{r['nginx_rps'] / r['direct_rps']:>7.0%}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
