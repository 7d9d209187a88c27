"""Cold page loads of a Vite dev server in headless Chromium: directly over
http://127.0.0.1:PORT, through the proxy over HTTP/1.1, and through the proxy over HTTP/2.

Run by hand: `.venv/bin/python bench/browser_load.py` (needs node/npm, which installs Vite
into a cache folder the first time, and Debian's `chromium`). A generated app of MODULES
ES modules (default 320) is served by `vite` in dev mode, so the browser asks for every
module separately, as it does while developing. Each load uses a fresh Chromium profile (a
cold cache); the figure is the time from navigation start until the last module has run,
as the page measures it itself (`performance.now()`), median of `--loads` (default 10).
Vite's own transform cache is warmed by one load first. Beside each time: the processor time
the daemon and Vite used during a load (medians), since on a busy machine every
millisecond the proxy spends is one the browser and Vite do not get. Target: through the proxy over
HTTP/2 no slower than direct HTTP/1.1.

The proxy's certificate is accepted with --ignore-certificate-errors (this measures speed;
the trust path has its own test, tests/test_browser_chromium.py). `--disable-http2` makes
Chromium use HTTP/1.1 through the proxy (six connections per host, as browsers do).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import private_daemon

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "taskmux-bench", "vite-app")
VITE = "vite@6"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-features=Translate",
                  "--ignore-certificate-errors"]


def rpc(sock_path: str, method: str, params: dict[str, object]) -> dict[str, object]:
    msg = {"jsonrpc": "2.0", "method": method, "id": 1, "params": params}
    with socket.socket(socket.AF_UNIX) as s:
        deadline = time.monotonic() + 20
        while True:  # (the socket file can appear a moment before the daemon listens)
            try:
                s.connect(sock_path)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        s.sendall(json.dumps(msg).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            buf += s.recv(65536)
    reply = json.loads(buf)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    result: dict[str, object] = reply["result"]
    return result


def generate_app(folder: str, modules: int) -> None:
    """index.html, src/main.js importing ``modules`` modules (in groups that import a shared
    helper, so the graph has depth as a real app's does), and Vite itself."""
    src = os.path.join(folder, "src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "util.js"), "w") as fh:
        fh.write("export const add = (a, b) => a + b;\n")
    for i in range(modules):
        with open(os.path.join(src, f"m{i}.js"), "w") as fh:
            fh.write(f"import {{ add }} from './util.js';\n"
                     f"export const value{i} = add({i}, 1);\n"
                     f"export function render{i}() {{ return 'module {i}: ' + value{i}; }}\n")
    lines = [f"import {{ value{i} }} from './m{i}.js';" for i in range(modules)]
    total = " + ".join(f"value{i}" for i in range(modules))
    lines.append(f"const total = {total};")
    lines.append("const nav = performance.getEntriesByType('navigation')[0];")
    lines.append("document.body.textContent = 'RESULT:' + JSON.stringify({ms: "
                 "performance.now(), total, protocol: nav.nextHopProtocol, "
                 "resources: performance.getEntriesByType('resource').length});")
    with open(os.path.join(src, "main.js"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(folder, "index.html"), "w") as fh:
        fh.write("<!doctype html><html><head><meta charset='utf-8'><title>bench</title>"
                 "</head><body><script type='module' src='/src/main.js'></script>"
                 "</body></html>\n")
    if not os.path.isdir(os.path.join(folder, "node_modules", "vite")):
        with open(os.path.join(folder, "package.json"), "w") as fh:
            json.dump({"name": "tmx-bench", "private": True, "type": "module"}, fh)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", VITE], cwd=folder,
                       check=True, capture_output=True, timeout=600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def task_connects(sock_path: str) -> int:
    """Connections the proxy opened to tasks so far."""
    proxy = rpc(sock_path, "daemon.status", {})["proxy"]
    assert isinstance(proxy, dict)
    return int(proxy.get("task_connections", 0))  # (0 from a daemon that does not count)


def cpu_ms(pid: int) -> float:
    """Processor time (user + system) the process ``pid`` used so far, in milliseconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def load(url: str, extra: list[str]) -> dict[str, object]:
    profile = tempfile.mkdtemp(prefix="tmxb-chromium-")
    try:
        proc = subprocess.run(["chromium", *CHROMIUM_FLAGS, *extra,
                               f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                               "--dump-dom", url],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "TMPDIR": profile})  # its temp folder too
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if "RESULT:" not in proc.stdout:
        raise RuntimeError(f"the page did not finish loading from {url}:\n{proc.stdout[-500:]}")
    result: dict[str, object] = json.loads(proc.stdout.split("RESULT:", 1)[1].split("<", 1)[0])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", type=int, default=320)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--app", default=CACHE, help="where the generated app lives")
    parser.add_argument("--ways", default="direct,h1,h2",
                        help="which of direct,h1,h2 to load (default all three, alternated)")
    parser.add_argument("--profile", metavar="FILE",
                        help="record the daemon with py-spy during the loads (collapsed stacks)")
    args = parser.parse_args()
    for tool in ("chromium", "npm", "node"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (Debian: apt-get install chromium nodejs npm)")
    generate_app(args.app, args.modules)
    vite_port, https_port = free_port(), free_port()
    vite = subprocess.Popen([os.path.join(args.app, "node_modules", ".bin", "vite"),
                             "--port", str(vite_port), "--strictPort", "--host", "127.0.0.1"],
                            cwd=args.app, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    config = (f'proxy_https_port = {https_port}\nproxy_http_redirect_port = 0\n'
              'host_resolver = "noop"\ndns_server_port = 0\n')
    try:
        wait_for_port(vite_port)
        with private_daemon({"TASKMUX_TEST_HOOKS": "1"}, config) as (home, _env):
            sock = os.path.join(home, "ctl.sock")
            rpc(sock, "routes.set", {"project": "bench", "backends": [
                {"task": "web", "host": "web", "port": vite_port, "state": "running",
                 "ready": True}]})
            wait_for_port(https_port)
            daemon_pid = int(str(rpc(sock, "daemon.status", {})["pid"]))
            every = {
                "direct": ("direct http/1.1", f"http://127.0.0.1:{vite_port}/", []),
                "h1": ("proxy http/1.1", f"https://web.bench.localhost:{https_port}/",
                       ["--disable-http2"]),
                "h2": ("proxy h2", f"https://web.bench.localhost:{https_port}/", []),
            }
            ways = {every[w][0]: every[w][1:] for w in args.ways.split(",")}
            for url, extra in ways.values():
                load(url, extra)  # warm Vite's transform cache (and check each way works)
            times: dict[str, list[float]] = {name: [] for name in ways}
            cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
            opened: dict[str, list[int]] = {name: [] for name in ways}
            seen: dict[str, object] = {}
            spy = None if args.profile is None else subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-r", "500",
                 "--nonblocking", "-f", "raw", "-o", args.profile, "-p", str(daemon_pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(args.loads):  # alternate, so noise from other load hits each
                for name, (url, extra) in ways.items():
                    before = cpu_ms(daemon_pid), cpu_ms(vite.pid), task_connects(sock)
                    result = load(url, extra)
                    cpu[name].append((cpu_ms(daemon_pid) - before[0],
                                      cpu_ms(vite.pid) - before[1]))
                    opened[name].append(task_connects(sock) - before[2])
                    times[name].append(float(str(result["ms"])))
                    seen[name] = result["protocol"]
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
    finally:
        vite.terminate()
        vite.wait(10)
    print(f"{args.modules} modules, cold loads in headless Chromium, median of {args.loads}:")
    for name, values in times.items():
        daemon = statistics.median(d for d, _ in cpu[name])
        node = statistics.median(v for _, v in cpu[name])
        print(f"  {name:16} {statistics.median(values):7.0f} ms  (protocol {seen[name]}, "
              f"min {min(values):.0f}, max {max(values):.0f}; cpu: daemon {daemon:.0f} ms, "
              f"vite {node:.0f} ms; task connections opened {statistics.median(opened[name]):.0f})")
    if "direct http/1.1" in times:
        direct = statistics.median(times["direct http/1.1"])
        for name in ("proxy http/1.1", "proxy h2"):
            if name in times:
                print(f"  {name} / direct: {statistics.median(times[name]) / direct:.3f}")


if __name__ == "__main__":
    main()
