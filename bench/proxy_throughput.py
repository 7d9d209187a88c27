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

With `--references nginx,caddy` (the default: those of them installed) the same backend is
also measured through nginx and Caddy terminating TLS with the same certificate, nginx with
one worker process and Caddy with GOMAXPROCS=1 (like taskmux's one event loop), upstream
keep-alive on: what C and Go proxies manage on this machine, so the ratio can be read against
what is possible here and not only against the target. Each runs on a free loopback port of
its own and is stopped by pid at the end.

Every figure is measured at each of `--connections` (default 1 and 16). With h2load
(Debian: nghttp2-client) the proxies are measured over HTTP/2 too: the same connections,
each with `--streams` requests in flight (default 10). The table gives requests per second,
medians of `--rounds`; at one HTTP/1.1 connection that is one request at a time, so its
inverse is the latency of a request.
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
  keepalive_requests 1000000;  # (1000 by default: it would close the measuring connections)
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
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


CADDYFILE = """
{{
  admin off
  auto_https disable_redirects
  skip_install_trust
  storage file_system {folder}/data
  servers {{
    protocols h1 h2
  }}
}}
https://{name}:{port} {{
  bind 127.0.0.1
  tls {cert} {key}
  log {{
    output discard
  }}
  reverse_proxy 127.0.0.1:{backend} {{
    header_up X-Forwarded-Proto https
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start") from exc
            time.sleep(0.02)


@contextlib.contextmanager
def reference(kind: str, backend_port: int, cert: str, key: str) -> Iterator[int]:
    """nginx or Caddy proxying to ``backend_port`` on a free loopback port (yielded), with
    its files in a temporary folder; stopped by pid."""
    folder = tempfile.mkdtemp(prefix=f"tmxb-{kind}-")
    port = free_port()
    env = dict(os.environ)
    if kind == "nginx":
        conf = os.path.join(folder, "nginx.conf")
        with open(conf, "w") as fh:
            fh.write(NGINX_CONF.format(folder=folder, backend=backend_port, port=port,
                                       cert=cert, key=key))
        argv = ["nginx", "-c", conf, "-p", folder]
    else:
        conf = os.path.join(folder, "Caddyfile")
        with open(conf, "w") as fh:
            fh.write(CADDYFILE.format(folder=folder, backend=backend_port, port=port,
                                      cert=cert, key=key, name=NAME))
        argv = ["caddy", "run", "--config", conf, "--adapter", "caddyfile"]
        # Caddy's own files stay in the folder; one OS thread runs Go code, as one event
        # loop runs taskmux's proxy and one worker process nginx's.
        env.update(HOME=folder, XDG_DATA_HOME=folder, XDG_CONFIG_HOME=folder, GOMAXPROCS="1")
    with open(os.path.join(folder, "log"), "wb") as log:  # (the child keeps its own copy)
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_listening(port, proc, kind)
        except RuntimeError:
            with open(os.path.join(folder, "log"), "rb") as fh:
                sys.stderr.write(fh.read()[-2000:].decode(errors="replace"))
            raise
        yield port
    finally:
        proc.send_signal(signal.SIGQUIT if kind == "nginx" else signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
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


def h2load(url: str, port: int, connections: int, streams: int, seconds: float
           ) -> dict[str, float]:
    """Requests per second over HTTP/2 by h2load (TLS to 127.0.0.1:``port``, with the task's
    name as SNI and :authority, so no name resolution is needed)."""
    argv = ["h2load", "-t1", f"-c{connections}", f"-m{streams}",
            f"-D{max(1, round(seconds))}", f"--connect-to=127.0.0.1:{port}", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    m = re.search(r"finished in [^,]+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, "
                     r"(\d+) failed", out)
    codes = re.search(r"status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", out)
    # (Requests still in flight when the time is up count as failed: at most one per stream.)
    if m is None or done is None or int(done.group(2)) > connections * streams \
            or (codes is not None and codes.groups() != ("0", "0")):
        raise RuntimeError(f"h2load saw errors:\n{out}")
    return {"rps": float(m.group(1))}


def measure(kind: str, proxy_port: int, sock: str, hosts_file: str, args: argparse.Namespace,
            counts: list[int], references: list[str], http2: bool
            ) -> dict[tuple[str, int], float]:
    """Median requests per second of each way (direct, taskmux, each reference; "/h2" for
    HTTP/2) at each number of connections."""
    rows: dict[tuple[str, int], list[float]] = {}
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(backend(kind))
        rpc(sock, "routes.set", {"project": "bench", "backends": [
            {"task": "web", "host": "web", "port": port, "state": "running", "ready": True}]})
        ports = {"taskmux": proxy_port}
        if references:
            leaf = rpc(sock, "ca.mint", {"project": "bench"})["minted"][0]
            for ref in references:
                ports[ref] = stack.enter_context(reference(ref, port, leaf["cert"],
                                                           leaf["key"]))
        ways: list[tuple[str, str, int]] = [("direct", f"http://127.0.0.1:{port}/", 0)]
        ways += [(name, f"https://{NAME}:{p}/", p) for name, p in ports.items()]

        def once(name: str, url: str, p: int, conns: int, seconds: float, h2: bool) -> float:
            if h2:
                return h2load(url, p, conns, args.streams, seconds)["rps"]
            return wrk(url, conns, seconds, None if name == "direct" else hosts_file)["rps"]

        plan = [(name, url, p, h2) for name, url, p in ways
                for h2 in ((False, True) if http2 and name != "direct" else (False,))]
        for name, url, p, h2 in plan:  # warm up every path
            once(name, url, p, max(counts), 1, h2)
        for _ in range(args.rounds):  # alternate, so noise from other load hits each
            for conns in counts:
                for name, url, p, h2 in plan:
                    key = (name + ("/h2" if h2 else ""), conns)
                    rows.setdefault(key, []).append(once(name, url, p, conns, args.seconds, h2))
    return {k: statistics.median(v) for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT_FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--backends",
                        default="stdlib,node,asyncio" if shutil.which("node") else "stdlib,asyncio")
    parser.add_argument("--connections", default="1,16",
                        help="numbers of connections to measure at, comma-separated")
    parser.add_argument("--streams", type=int, default=10,
                        help="requests in flight on each HTTP/2 connection")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    installed = [name for name in ("nginx", "caddy") if shutil.which(name)]
    parser.add_argument("--references", default=",".join(installed),
                        help="other proxies to measure on the same backend, comma-separated: "
                             "nginx, caddy (default: those installed; '' for none)")
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    for tool in ("wrk", "unshare"):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool} (Debian: apt install wrk util-linux)")
    if os.geteuid() != 0:
        sys.exit("run as root: wrk resolves the task's name in a private mount namespace")
    references = [r for r in args.references.split(",") if r]
    for ref in references:
        if ref not in ("nginx", "caddy"):
            sys.exit(f"unknown reference {ref!r}: choose from nginx, caddy")
        if shutil.which(ref) is None:
            sys.exit(f"{ref} is not installed (Debian: apt install {ref})")
    try:
        counts = [int(c) for c in args.connections.split(",")]
    except ValueError:
        sys.exit(f"--connections takes numbers separated by commas, not {args.connections!r}")
    http2 = shutil.which("h2load") is not None
    if not http2:
        print("(h2load not installed: HTTP/1.1 only; Debian: apt install nghttp2-client)")
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
            print(f"requests/s, keep-alive, small responses, {args.seconds:g}s x {args.rounds} "
                  f"rounds (medians); HTTP/1.1 by wrk"
                  + (f", HTTP/2 by h2load with {args.streams} streams per connection"
                     if http2 else ""))
            names = ["direct", "taskmux", *references]
            if http2:
                names += [f"{n}/h2" for n in ("taskmux", *references)]
            print(f"{'backend':<9}{'conns':>6}" + "".join(f"{n:>12}" for n in names)
                  + f"{'taskmux/direct':>16}")
            for kind in args.backends.split(","):
                r = measure(kind, proxy_port, sock, hosts_file, args, counts, references,
                            http2)
                for conns in counts:
                    cells = "".join(f"{r[(n, conns)]:>12,.0f}" for n in names)
                    ratio = r[("taskmux", conns)] / r[("direct", conns)]
                    print(f"{kind:<9}{conns:>6}{cells}{ratio:>15.0%}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
