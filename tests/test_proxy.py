"""The HTTPS proxy through a real daemon: real TLS (a client trusting only the taskmux CA),
real backends on loopback, routes filled through the ``routes.set`` test hook."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import threading
import time
from typing import Any

import pytest

from tests.helpers import (
    ProxyHarness,
    call,
    route,
    wait_until,
    write_config,
)
from tests.web import ProxyConnection, backend, ca_context, get, wss_echo


def echo(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    return data


def header(info: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in info["headers"] if k.lower() == name.lower()]


def test_two_tasks_of_two_projects_by_name(proxy: ProxyHarness, tls: ssl.SSLContext) -> None:
    with backend("web") as web, backend("api") as api:
        proxy.set_routes("shop", route("web", "web", web.port))
        proxy.set_routes("blog", route("api", "api", api.port))
        status, resp, body = get("web.shop.localhost", proxy.https_port, tls, "/x?y=1")
        assert status == 200 and resp.getheader("X-Backend") == "web"
        assert echo(body)["path"] == "/x?y=1"
        status, resp, _ = get("api.blog.localhost", proxy.https_port, tls)
        assert status == 200 and resp.getheader("X-Backend") == "api"
        listed = call(proxy.daemon.socket, "routes.list")["routes"]
        web_route = next(r for r in listed if r["project"] == "shop")
        assert web_route["url"] == f"https://web.shop.localhost:{proxy.https_port}/"
        # The certificate is the project's wildcard, verified against the taskmux CA only.
        with socket.create_connection(("127.0.0.1", proxy.https_port)) as raw, \
                tls.wrap_socket(raw, server_hostname="web.shop.localhost") as s:
            cert = s.getpeercert()
        assert ("DNS", "*.shop.localhost") in cert["subjectAltName"]
        assert ("DNS", "shop.localhost") in cert["subjectAltName"]
        assert s.selected_alpn_protocol() in (None, "http/1.1")


def test_apex_catch_all_and_precedence(proxy: ProxyHarness, tls: ssl.SSLContext) -> None:
    with backend("apex") as apex, backend("any") as anything, backend("api") as api:
        proxy.set_routes("prec", route("home", "@", apex.port), route("rest", "*", anything.port),
                         route("api", "api", api.port))
        port = proxy.https_port
        cases = {"prec.localhost": "apex", "api.prec.localhost": "api",
                 "API.Prec.localhost": "api", "other.prec.localhost": "any"}
        for name, expect in cases.items():
            status, resp, _ = get(name, port, tls)
            assert (status, resp.getheader("X-Backend")) == (200, expect), name
        # Deeper names route to the catch-all too, though no wildcard certificate can cover
        # them (a wildcard spans one label): only a client that skips the name check gets in.
        lax = ca_context(proxy.ca_path)
        lax.check_hostname = False
        status, resp, _ = get("deep.er.prec.localhost", port, lax)
        assert (status, resp.getheader("X-Backend")) == (200, "any")


def test_unknown_names_get_a_page_or_a_tls_alert(proxy: ProxyHarness,
                                                 tls: ssl.SSLContext) -> None:
    with backend("web") as web:
        proxy.set_routes("known", route("web", "web", web.port))
        status, resp, body = get("nope.known.localhost", proxy.https_port, tls)
        assert status == 404 and resp.getheader("X-Taskmux-Error") == "unknown-host"
        assert b"web.known.localhost" in body  # names the hosts that exist
    for name in ("web.unknown.localhost", None):
        with socket.create_connection(("127.0.0.1", proxy.https_port), timeout=10) as raw:
            client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client.check_hostname = False
            client.verify_mode = ssl.CERT_NONE
            with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
                client.wrap_socket(raw, server_hostname=name)


def test_headers_pass_through_and_forwarded_headers_are_set(
        proxy: ProxyHarness, tls: ssl.SSLContext) -> None:
    with backend("web") as web:
        proxy.set_routes("hdrs", route("web", "web", web.port))
        conn = ProxyConnection("web.hdrs.localhost", proxy.https_port, tls)
        try:
            conn.putrequest("GET", "/echo")
            conn.putheader("X-Repeated", "one")
            conn.putheader("X-Repeated", "two")
            conn.putheader("X-Forwarded-For", "203.0.113.7")
            conn.putheader("X-Forwarded-Proto", "http")  # a client's claim, not trusted
            conn.putheader("Cookie", "a=1; b=2")
            conn.endheaders()
            info = echo(conn.getresponse().read())
            conn.request("GET", "/cookies")
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
    host = f"web.hdrs.localhost:{proxy.https_port}"
    assert header(info, "X-Repeated") == ["one", "two"]
    assert header(info, "Cookie") == ["a=1; b=2"]
    assert header(info, "Host") == [host]
    assert header(info, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert header(info, "X-Forwarded-Proto") == ["https"]
    assert header(info, "X-Forwarded-Host") == [host]
    assert resp.msg.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    assert ("x-MiXeD-case", "Kept  As Is") in resp.getheaders()


@pytest.mark.parametrize("path", ["/stream", "/sse"])
def test_responses_stream_as_the_task_writes_them(proxy: ProxyHarness, tls: ssl.SSLContext,
                                                  path: str) -> None:
    with backend("web") as web:
        proxy.set_routes("stream", route("web", "web", web.port))
        conn = ProxyConnection("web.stream.localhost", proxy.https_port, tls)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200
            seen = []
            for i, gate in enumerate(web.gate.events):
                # The backend sends the next piece only once this one arrived here.
                line = resp.readline()
                if path == "/sse":
                    assert line == f"data: event {i}\n".encode()
                    assert resp.readline() == b"\n"
                seen.append(line)
                gate.set()
            assert resp.read() == b""
        finally:
            conn.close()
    assert len(seen) == 3


def test_large_uploads_fixed_and_chunked(proxy: ProxyHarness, tls: ssl.SSLContext) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    with backend("web") as web:
        proxy.set_routes("upload", route("web", "web", web.port))
        conn = ProxyConnection("web.upload.localhost", proxy.https_port, tls)
        try:
            conn.request("POST", "/up", body=payload)
            info = echo(conn.getresponse().read())
            assert (info["body_size"], info["body_sha256"]) == (len(payload), digest)
            pieces = (payload[i:i + 100_000] for i in range(0, len(payload), 100_000))
            conn.request("PUT", "/up", body=pieces, encode_chunked=True)
            info = echo(conn.getresponse().read())
            assert (info["body_size"], info["body_sha256"]) == (len(payload), digest)
            assert header(info, "Transfer-Encoding") == ["chunked"]
            conn.request("POST", "/small", body=b"x=1",
                         headers={"Expect": "100-continue", "Content-Length": "3"})
            assert echo(conn.getresponse().read())["body_size"] == 3
        finally:
            conn.close()


def test_a_large_download_reaches_a_slow_reader_whole(proxy: ProxyHarness,
                                                      tls: ssl.SSLContext) -> None:
    size = 24 * 1024 * 1024
    piece = bytes(range(256)) * 256
    expected = hashlib.sha256((piece * (size // len(piece) + 1))[:size]).hexdigest()
    with backend("web") as web:
        proxy.set_routes("big", route("web", "web", web.port))
        conn = ProxyConnection("web.big.localhost", proxy.https_port, tls)
        try:
            conn.request("GET", f"/big?n={size}")
            resp = conn.getresponse()
            digest = hashlib.sha256()
            first = resp.read(1024 * 1024)
            time.sleep(0.3)  # a slow reader: the proxy must hold back, not buffer it all
            digest.update(first)
            while chunk := resp.read(256 * 1024):
                digest.update(chunk)
        finally:
            conn.close()
    assert digest.hexdigest() == expected


def test_a_client_leaving_mid_stream_frees_both_connections(proxy: ProxyHarness,
                                                          tls: ssl.SSLContext) -> None:
    with backend("web") as web:
        proxy.set_routes("leave", route("web", "web", web.port))
        conn = ProxyConnection("web.leave.localhost", proxy.https_port, tls)
        conn.request("GET", "/sse")
        resp = conn.getresponse()
        assert resp.readline() == b"data: event 0\n"
        assert proxy.status("proxy")["connections"] >= 1
        conn.close()
        wait_until(lambda: proxy.status("proxy")["connections"] == 0,
                   what="the proxy to drop the connection")
        for gate in web.gate.events:
            gate.set()  # let the backend's handler finish


def test_websocket_echo_with_a_subprotocol(proxy: ProxyHarness, tls: ssl.SSLContext) -> None:
    from websockets.sync.server import ServerConnection, serve

    def echo_ws(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    with serve(echo_ws, "127.0.0.1", 0, subprotocols=["chat.v2"]) as server:  # type: ignore[list-item]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port = server.socket.getsockname()[1]
            proxy.set_routes("ws", route("chat", "chat", port))
            agreed, replies = wss_echo("chat.ws.localhost", proxy.https_port, tls,
                                       ["hello", b"\x00\x01binary"], ["chat.v1", "chat.v2"])
            assert agreed == "chat.v2"
            assert replies == ["hello", b"\x00\x01binary"]
        finally:
            server.shutdown()
            thread.join(5)


def test_keep_alive_reuses_both_connections(proxy: ProxyHarness, tls: ssl.SSLContext) -> None:
    with backend("web") as web:
        proxy.set_routes("keep", route("web", "web", web.port))
        conn = ProxyConnection("web.keep.localhost", proxy.https_port, tls)
        try:
            conn.request("GET", "/1")
            first = echo(conn.getresponse().read())
            sock = conn.sock
            upstream_ports = {first["client_port"]}
            for i in range(5):
                conn.request("GET", f"/{i}")
                resp = conn.getresponse()
                assert resp.status == 200
                upstream_ports.add(echo(resp.read())["client_port"])
                assert conn.sock is sock  # the same TLS connection
            assert len(upstream_ports) == 1  # and the same connection to the task
            # HEAD has no body even with a Content-Length; the connection stays in step.
            conn.request("HEAD", "/")
            resp = conn.getresponse()
            assert resp.getheader("Content-Length") == "12345" and resp.read() == b""
            conn.request("GET", "/last")
            assert echo(conn.getresponse().read())["path"] == "/last"
        finally:
            conn.close()
    assert first["path"] == "/1"


def test_a_backend_bound_only_to_ipv6_loopback(proxy: ProxyHarness,
                                                tls: ssl.SSLContext) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    with backend("v6", "::1") as v6:
        proxy.set_routes("six", route("web", "web", v6.port))
        status, resp, body = get("web.six.localhost", proxy.https_port, tls)
        assert (status, resp.getheader("X-Backend")) == (200, "v6")
        assert echo(body)["client"] == "::1"


def test_a_task_that_is_not_ready_gets_a_502_page(proxy: ProxyHarness,
                                                  tls: ssl.SSLContext) -> None:
    proxy.set_routes("down", route("web", "web", 1, state="stopped", ready=False),
                     route("api", "api", 2, state="starting", ready=False))
    conn = ProxyConnection("web.down.localhost", proxy.https_port, tls)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 502 and resp.getheader("X-Taskmux-Error") == "task-not-ready"
        assert "web" in body and "down" in body and "stopped" in body
        assert "taskmux start web" in body
        # A page of our own keeps the connection: the next request works on it.
        conn.request("GET", "/", headers={"Accept": "text/html"})
        resp = conn.getresponse()
        page = resp.read().decode()
        assert resp.status == 502 and page.startswith("<!doctype html>")
    finally:
        conn.close()
    status, resp, body = get("api.down.localhost", proxy.https_port, tls)
    assert status == 502 and b"starting" in body and resp.getheader("Retry-After") == "2"


def test_a_running_task_that_does_not_listen_gets_a_502_naming_its_port(
        proxy: ProxyHarness, tls: ssl.SSLContext) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    proxy.set_routes("deaf", route("web", "web", port))
    status, resp, body = get("web.deaf.localhost", proxy.https_port, tls)
    assert status == 502 and resp.getheader("X-Taskmux-Error") == "backend-unreachable"
    assert str(port).encode() in body and b"$PORT" in body


def test_routes_follow_changes_live(proxy: ProxyHarness, tls: ssl.SSLContext) -> None:
    port = proxy.https_port
    with pytest.raises(ssl.SSLError):
        get("web.live.localhost", port, tls)
    with backend("one") as one, backend("two") as two:
        proxy.set_routes("live", route("web", "web", one.port))
        assert get("web.live.localhost", port, tls)[1].getheader("X-Backend") == "one"
        proxy.set_routes("live", route("web", "web", two.port),
                         route("api", "api", one.port))  # restarted elsewhere; a new host
        assert get("web.live.localhost", port, tls)[1].getheader("X-Backend") == "two"
        assert get("api.live.localhost", port, tls)[1].getheader("X-Backend") == "one"
        proxy.remove("live")
        with pytest.raises(ssl.SSLError):
            get("web.live.localhost", port, tls)


def test_plain_http_redirects_to_https(start_daemon: Any, home: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        redirect_port = s.getsockname()[1]
    write_config(home, f"proxy_http_redirect_port = {redirect_port}\n")
    harness = ProxyHarness(start_daemon())
    section = harness.status("proxy")
    assert section["redirect_port"] == redirect_port
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", redirect_port, timeout=10)
    try:
        conn.request("GET", "/a/b?c=1", headers={"Host": "web.shop.localhost"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 301
        assert resp.getheader("Location") == \
            f"https://web.shop.localhost:{section['https_port']}/a/b?c=1"
        conn.request("GET", "/", headers={"Host": "example.com"})
        resp = conn.getresponse()
        assert resp.status == 404 and b"not a taskmux name" in resp.read()
    finally:
        conn.close()


def test_status_says_why_the_proxy_is_not_bound(proxy: ProxyHarness, start_daemon: Any,
                                                home: str) -> None:
    taken = proxy.https_port
    write_config(home, f"proxy_https_port = {taken}\nproxy_bind = \"127.0.0.1\"\n")
    second = ProxyHarness(start_daemon())
    section = second.status("proxy")
    assert section["enabled"] is True and section["bound"] is False
    assert section["https_port"] is None
    assert "another program is listening" in section["error"]
    assert "taskmux config set proxy_https_port" in section["error"]
    assert section["summary"].startswith("not serving")
    # It keeps running, and serves once the settings point at a free port.
    write_config(home, "proxy_https_port = 0\n")
    call(second.daemon.socket, "config.reload")
    wait_until(lambda: second.status("proxy")["bound"], what="the proxy to rebind")
    assert second.https_port != taken
