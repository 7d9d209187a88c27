"""Real tasks behind the proxy: the projects code publishes routes as tasks start, stop and
change; URLs in status and `url`."""

from __future__ import annotations

import os
import sys

from tests.helpers import call, run_cli, run_json, wait_until
from tests.projects import task, write_project
from tests.web import ca_context, get

SERVE = ("import http.server, os; "
         "class H(http.server.BaseHTTPRequestHandler):\n"
         "    def do_GET(self):\n"
         "        env = os.environ\n"
         "        body = (env['TASKMUX_PROJECT'] + '/' + env['TASKMUX_TASK']).encode()\n"
         "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
         "        self.end_headers(); self.wfile.write(body)\n"
         "    def log_message(self, *a): pass\n"
         "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H)"
         ".serve_forever()")


def server_file(folder: str) -> str:
    path = os.path.join(folder, "serve.py")
    with open(path, "w") as fh:
        fh.write(SERVE.replace("; class", "\nclass"))
    return path


def test_two_projects_through_the_proxy_by_name(env: dict[str, str], tmp_path: str,
                                                home: str) -> None:
    script = server_file(str(tmp_path))
    shop = write_project(str(tmp_path / "shop"), f"""
        name = "shop"
        [tasks.web]
        command = "{sys.executable} {script}"
        host = "web"
        health_url = "http://127.0.0.1:$PORT/"
        [tasks.front]
        command = "{sys.executable} {script}"
        host = "@"
    """)
    blog = write_project(str(tmp_path / "blog"), f"""
        name = "blog"
        [tasks.api]
        command = "{sys.executable} {script}"
        host = "api"
        health_url = "http://127.0.0.1:$PORT/"
    """)
    assert run_json(["start"], env, cwd=shop)[0] == 0
    assert run_json(["start"], env, cwd=blog)[0] == 0
    sock = os.path.join(home, "ctl.sock")
    port = call(sock, "daemon.status")["proxy"]["https_port"]
    tls = ca_context(call(sock, "ca.info")["cert"])

    def fetch(host: str) -> tuple[int, bytes]:
        status, _resp, body = get(host, port, tls)
        return status, body

    assert wait_until(lambda: fetch("web.shop.localhost") == (200, b"shop/web"), 15)
    assert wait_until(lambda: fetch("api.blog.localhost") == (200, b"blog/api"), 15)
    wait_until(lambda: fetch("shop.localhost") == (200, b"shop/front"), 15)
    # URLs in status and from `url`.
    web = task(env, shop, "web")
    assert web["url"] == f"https://web.shop.localhost:{port}/"
    assert run_cli(["url", "web"], env, cwd=shop).stdout.strip() == web["url"]
    # A stopped task gets a 502 page naming it and its state.
    assert run_json(["stop", "api"], env, cwd=blog)[0] == 0
    status, body = fetch("api.blog.localhost")
    assert status == 502 and b"api" in body and b"stopped" in body


def test_a_host_added_to_the_config_is_routed_live(env: dict[str, str], tmp_path: str,
                                                   home: str) -> None:
    script = server_file(str(tmp_path))
    proj = write_project(str(tmp_path / "p"), f"""
        name = "grow"
        [tasks.one]
        command = "{sys.executable} {script}"
        host = "one"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    sock = os.path.join(home, "ctl.sock")
    port = call(sock, "daemon.status")["proxy"]["https_port"]
    tls = ca_context(call(sock, "ca.info")["cert"])
    with open(os.path.join(proj, "taskmux.toml"), "a") as fh:
        fh.write(f'[tasks.two]\ncommand = "{sys.executable} {script}"\nhost = "two"\n')
    wait_until(lambda: get("two.grow.localhost", port, tls)[0] == 200, 20, "the new route")
    assert get("two.grow.localhost", port, tls)[2] == b"grow/two"
    assert call(sock, "daemon.status")["pid"]  # same daemon all along
