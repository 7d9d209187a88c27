"""The proxy's processor time per request over HTTP/2, for the request pattern of a Vite page
of hundreds of modules, beside Vite's own processor time for the same requests.

Run by hand: `.venv/bin/python bench/proxy_cpu.py` (needs node/npm and Vite as
bench/browser_load.py sets them up, and h2load from Debian's nghttp2-client). The generated
app of bench/browser_load.py is served by `vite`; each "page" is one fresh TLS connection
from h2load asking for the page's requests (the HTML, Vite's client, the app's modules) with
100 streams in flight and a browser's request fields, as Chromium does on a cold load.
Figures: processor time (user + system, from /proc) of the daemon and of Vite per page and
per 100 requests, medians of `--pages` pages; beside them Vite's processor time for the same
requests asked directly over HTTP/1.1 on six connections (as a browser would), the reference.
Processor time rather than wall time: on a loaded machine it is what the proxy takes from the
browser and the dev server, and it is far less noisy.

`--baseline REV` runs a second daemon from the git revision REV (its `taskmuxd` and
`taskmuxctl` unpacked into a temporary folder) on the same Vite, pages alternating between
the two, and prints both side by side with their ratio: before/after in one run, under the
same load.

`--chromium` makes each page a cold load of the app in headless Chromium instead (as
bench/browser_load.py loads it, over HTTP/2 through the proxy, over HTTP/1.1 directly):
Chromium sends each request as it finds it, one TLS record at a time and with priority,
where h2load sends them by the hundred, so the proxy's processor time per page is about
twice h2load's. Slower (a second or two a page), but what a browser costs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.browser_load import CACHE, free_port, generate_app, load, rpc, wait_for_port
from bench.common import private_daemon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "web.bench.localhost"
# What Chromium sends with a module request (besides the pseudo-headers and user-agent).
BROWSER_FIELDS = [
    'sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile: ?0",
    'sec-ch-ua-platform: "Linux"',
    "accept: */*",
    "origin: https://" + NAME,
    "sec-fetch-site: same-origin",
    "sec-fetch-mode: cors",
    "sec-fetch-dest: script",
    "referer: https://" + NAME + "/",
    "accept-encoding: gzip, deflate, br, zstd",
    "accept-language: en-US,en;q=0.9",
    "priority: u=1",
]
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "HeadlessChrome/131.0.0.0 Safari/537.36")


def cpu_ms(pid: int) -> float:
    """Processor time the process ``pid`` used so far (all its threads), in milliseconds: the
    scheduler's nanosecond count, where /proc/PID/stat counts in ticks of 10 ms."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), \
                open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
            total += int(fh.read().split()[0])
    return total / 1e6


def page_paths(modules: int) -> list[str]:
    """The requests of one cold load of the generated app, as Chromium makes them (less the
    HTML page itself, which Vite answers only to an Accept of text/html)."""
    return ["/@vite/client", "/src/main.js", "/node_modules/vite/dist/client/env.mjs",
            "/src/util.js", *[f"/src/m{i}.js" for i in range(modules)]]


def h2load(base: str, paths: list[str], folder: str, h1: bool, connect_to: int | None,
           streams: int = 100) -> None:
    """One page: every path once, on one HTTP/2 connection (100 streams in flight), or over
    HTTP/1.1 on six connections (a sixth of the paths each, one at a time); raises unless
    every answer was 2xx."""
    slices = [paths[i::6] for i in range(6)] if h1 else [paths]
    procs = []
    for n, part in enumerate(slices):
        uris = os.path.join(folder, f"uris{n}")
        with open(uris, "w") as fh:
            fh.write("".join(base + p + "\n" for p in part))
        argv = ["h2load", "-t1", "-c1", f"-n{len(part)}", "-i", uris,
                "-H", f"user-agent: {USER_AGENT}"]
        for f in BROWSER_FIELDS:
            argv += ["-H", f]
        argv += ["--h1", "-m1"] if h1 else [f"-m{streams}"]
        if connect_to is not None:
            argv.append(f"--connect-to=127.0.0.1:{connect_to}")
        procs.append((subprocess.Popen(argv, stdout=subprocess.PIPE, text=True), len(part)))
    for proc, count in procs:
        out, _ = proc.communicate()
        codes = re.search(r"status codes: (\d+) 2xx, \d+ 3xx, \d+ 4xx, \d+ 5xx", out)
        if proc.returncode or codes is None or int(codes.group(1)) != count:
            raise RuntimeError(f"h2load saw errors:\n{out}")


@contextlib.contextmanager
def baseline_tree(rev: str) -> Iterator[str]:
    """``taskmuxd`` and ``taskmuxctl`` of git revision ``rev``, unpacked in a folder."""
    folder = tempfile.mkdtemp(prefix="tmxb-rev-")
    try:
        archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "taskmuxd", "taskmuxctl"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def proxy(vite_port: int, tree: str | None) -> Iterator[tuple[int, int]]:
    """A private daemon (from ``tree`` when given) routing web.bench.localhost to Vite: its
    https port and pid."""
    https_port = free_port()
    config = (f'proxy_https_port = {https_port}\nproxy_http_redirect_port = 0\n'
              'host_resolver = "noop"\ndns_server_port = 0\n')
    env = {"TASKMUX_TEST_HOOKS": "1"}
    if tree is not None:  # (PYTHONSAFEPATH: the working folder's copy must not come first)
        env.update(PYTHONPATH=tree, PYTHONSAFEPATH="1")
    with private_daemon(env, config) as (home, _env):
        sock = os.path.join(home, "ctl.sock")
        rpc(sock, "routes.set", {"project": "bench", "backends": [
            {"task": "web", "host": "web", "port": vite_port, "state": "running",
             "ready": True}]})
        wait_for_port(https_port)
        yield https_port, int(str(rpc(sock, "daemon.status", {})["pid"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", type=int, default=320)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--app", default=CACHE, help="where the generated app lives")
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure the daemon of this git revision, side by side")
    parser.add_argument("--streams", type=int, default=100,
                        help="h2load's streams in flight (1: each request waits for the last "
                        "answer, one request to a read, as Chromium often sends them)")
    parser.add_argument("--chromium", action="store_true",
                        help="pages are cold loads in headless Chromium, not h2load runs")
    parser.add_argument("--profile", metavar="FILE",
                        help="record this tree's daemon with py-spy (collapsed stacks)")
    args = parser.parse_args()
    for tool in ("npm", "node", "chromium" if args.chromium else "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (Debian: apt-get install nodejs npm nghttp2-client)")
    generate_app(args.app, args.modules)
    paths = page_paths(args.modules)
    vite_port = free_port()
    vite = subprocess.Popen([os.path.join(args.app, "node_modules", ".bin", "vite"),
                             "--port", str(vite_port), "--strictPort", "--host", "127.0.0.1"],
                            cwd=args.app, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    folder = tempfile.mkdtemp(prefix="tmxb-")
    # name -> per page: (daemon ms, vite ms)
    cpu: dict[str, list[tuple[float, float]]] = {}
    try:
        wait_for_port(vite_port)
        with contextlib.ExitStack() as stack:
            ways: dict[str, tuple[str, int | None, int | None]] = {
                "direct h1": (f"http://127.0.0.1:{vite_port}", None, None)}
            if args.baseline:
                tree = stack.enter_context(baseline_tree(args.baseline))
                port, pid = stack.enter_context(proxy(vite_port, tree))
                ways[f"proxy h2 @{args.baseline}"] = (f"https://{NAME}:{port}", port, pid)
            port, pid = stack.enter_context(proxy(vite_port, None))
            ways["proxy h2 (this tree)"] = (f"https://{NAME}:{port}", port, pid)
            def page(base: str, connect_to: int | None) -> None:
                if not args.chromium:
                    h2load(base, paths, folder, connect_to is None, connect_to, args.streams)
                    return
                result = load(base + "/", [])
                expected = "http/1.1" if connect_to is None else "h2"
                if result["protocol"] != expected:
                    raise RuntimeError(f"Chromium used {result['protocol']}, not {expected}")

            for base, connect_to, _ in ways.values():  # warm Vite's transform cache
                page(base, connect_to)
            time.sleep(0.5)
            spy = None if args.profile is None else subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-r", "500",
                 "--gil", "--nonblocking", "-f", "raw", "-o", args.profile, "-p", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(args.pages):  # alternate, so noise from other load hits each
                for name, (base, connect_to, daemon) in ways.items():
                    before = (cpu_ms(daemon) if daemon else 0.0), cpu_ms(vite.pid)
                    page(base, connect_to)
                    cpu.setdefault(name, []).append(
                        ((cpu_ms(daemon) if daemon else 0.0) - before[0],
                         cpu_ms(vite.pid) - before[1]))
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
    finally:
        vite.terminate()
        vite.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    with open("/proc/loadavg") as fh:
        loadavg = fh.read().split()[0]
    per = 100 / len(paths)
    how = "Chromium cold loads" if args.chromium else "h2load"
    print(f"{len(paths)} requests per page ({how}; a {args.modules}-module Vite app), "
          "processor time "
          f"(user+sys), median of {args.pages} pages; load average {loadavg} on "
          f"{os.cpu_count()} cores:")
    print(f"  {'':28}{'daemon/page':>12}{'daemon/100':>12}{'vite/page':>11}{'vite/100':>10}"
          f"{'daemon/vite-direct':>20}")
    vite_direct = statistics.median(v for _, v in cpu["direct h1"])
    medians: dict[str, float] = {}
    for name, samples in cpu.items():
        daemon = medians[name] = statistics.median(d for d, _ in samples)
        node = statistics.median(v for _, v in samples)
        ratio = f"{daemon / vite_direct:.2f}" if daemon else "-"
        print(f"  {name:28}{daemon:12.1f}{daemon * per:12.1f}{node:11.1f}{node * per:10.1f}"
              f"{ratio:>20}")
    if args.baseline:
        before = medians[f"proxy h2 @{args.baseline}"]
        after = medians["proxy h2 (this tree)"]
        print(f"  daemon per page, this tree / {args.baseline}: {after / before:.3f}")


if __name__ == "__main__":
    main()
