"""HTTP/2 between clients and the proxy (ALPN h2), through a real daemon: httpx with h2 for
what a browser does, a raw h2 client for what a browser would never send. Backends stay
HTTP/1.1 on either loopback family."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import tempfile
import threading
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from tests import scratch
from tests.helpers import DaemonProcess, ProxyHarness, daemon_env, route, wait_until, write_config
from tests.web import backend, ca_context, h2_client, wss_echo

MB = 1024 * 1024


def url(proxy: ProxyHarness, name: str, path: str = "/") -> str:
    return f"https://{name}:{proxy.https_port}{path}"


def header(info: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in info["headers"] if k.lower() == name]


def test_h2_is_negotiated_and_requests_carry_what_http1_carries(proxy: ProxyHarness) -> None:
    with backend("web") as web, h2_client(proxy.ca_path) as client:
        proxy.set_routes("hshop", route("web", "web", web.port))
        resp = client.get(url(proxy, "web.hshop.localhost", "/x?y=1"),
                          headers=[("x-repeated", "one"), ("x-repeated", "two"),
                                   ("x-forwarded-for", "203.0.113.7"),
                                   ("x-forwarded-proto", "http"), ("cookie", "a=1"),
                                   ("cookie", "b=2")])
        assert resp.http_version == "HTTP/2" and resp.status_code == 200
        info = resp.json()
        cookies = client.get(url(proxy, "web.hshop.localhost", "/cookies"))
        head = client.head(url(proxy, "web.hshop.localhost", "/"))
        ports = {client.get(url(proxy, "web.hshop.localhost", f"/{i}")).json()["client_port"]
                 for i in range(5)}
    host = f"web.hshop.localhost:{proxy.https_port}"
    assert info["path"] == "/x?y=1" and info["method"] == "GET"
    assert header(info, "host") == [host]
    assert header(info, "x-repeated") == ["one", "two"]
    assert header(info, "cookie") == ["a=1; b=2"]  # HTTP/2's split cookies, joined again
    assert header(info, "x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
    assert header(info, "x-forwarded-proto") == ["https"]
    assert header(info, "x-forwarded-host") == [host]
    assert cookies.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    assert cookies.headers["x-mixed-case"] == "Kept  As Is"
    assert head.status_code == 200 and head.headers["content-length"] == "12345"
    assert head.content == b""
    assert len(ports) == 1  # one pooled, kept-alive connection to the task


@pytest.mark.parametrize("path", ["/stream", "/sse"])
def test_h2_responses_stream_as_the_task_writes_them(proxy: ProxyHarness, path: str) -> None:
    with backend("web") as web, h2_client(proxy.ca_path) as client:
        proxy.set_routes("hstream", route("web", "web", web.port))
        with client.stream("GET", url(proxy, "web.hstream.localhost", path)) as resp:
            assert resp.http_version == "HTTP/2" and resp.status_code == 200
            lines = resp.iter_lines()
            for i, gate in enumerate(web.gate.events):
                # The backend writes the next piece only once this one arrived here.
                if path == "/sse":
                    assert next(lines) == f"data: event {i}"
                    assert next(lines) == ""
                else:
                    assert next(lines) == f"chunk {i}"
                gate.set()
            assert list(lines) == []


def test_h2_uploads_of_50_mb_with_and_without_a_length(proxy: ProxyHarness) -> None:
    payload = os.urandom(50 * MB)
    digest = hashlib.sha256(payload).hexdigest()
    with backend("web") as web, h2_client(proxy.ca_path, timeout=60) as client:
        proxy.set_routes("hup", route("web", "web", web.port))
        # (In pieces: httpx re-slices one big bytes body per frame, which costs it minutes.)
        pieces = (payload[i:i + MB] for i in range(0, len(payload), MB))
        resp = client.post(url(proxy, "web.hup.localhost", "/up"), content=pieces,
                           headers={"content-length": str(len(payload))})
        assert resp.http_version == "HTTP/2"
        info = resp.json()
        assert (info["body_size"], info["body_sha256"]) == (len(payload), digest)
        assert header(info, "content-length") == [str(len(payload))]
        pieces = (payload[i:i + MB] for i in range(0, len(payload), MB))
        info = client.put(url(proxy, "web.hup.localhost", "/up"), content=pieces).json()
        assert (info["body_size"], info["body_sha256"]) == (len(payload), digest)
        assert header(info, "transfer-encoding") == ["chunked"]


def test_h2_a_large_download_reaches_a_slow_reader_whole(proxy: ProxyHarness) -> None:
    size = 24 * MB
    piece = bytes(range(256)) * 256
    expected = hashlib.sha256((piece * (size // len(piece) + 1))[:size]).hexdigest()
    digest = hashlib.sha256()
    with backend("web") as web, h2_client(proxy.ca_path) as client:
        proxy.set_routes("hbig", route("web", "web", web.port))
        with client.stream("GET", url(proxy, "web.hbig.localhost", f"/big?n={size}")) as resp:
            chunks = resp.iter_raw()
            digest.update(next(chunks))
            threading.Event().wait(0.3)  # a slow reader: flow control holds the task back
            for chunk in chunks:
                digest.update(chunk)
    assert digest.hexdigest() == expected


def test_h2_many_streams_at_once_on_one_connection(proxy: ProxyHarness) -> None:
    import httpcore
    import httpx

    class Loopback(httpcore.AnyIOBackend):
        async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                              local_address: str | None = None,
                              socket_options: Any = None) -> httpcore.AsyncNetworkStream:
            return await super().connect_tcp("127.0.0.1", port, timeout, local_address,
                                             socket_options)

    async def run(ca: str, port: int) -> list[httpx.Response]:
        transport = httpx.AsyncHTTPTransport(http1=False, http2=True)
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ca_context(ca), http1=False, http2=True, network_backend=Loopback(),
            max_connections=1)
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            return await asyncio.gather(*(client.get(
                f"https://web.hmany.localhost:{port}/{i}") for i in range(150)))

    with backend("web") as web:
        proxy.set_routes("hmany", route("web", "web", web.port))
        responses = asyncio.run(run(proxy.ca_path, proxy.https_port))
    assert all(r.http_version == "HTTP/2" and r.status_code == 200 for r in responses)
    assert sorted(r.json()["path"] for r in responses) == sorted(f"/{i}" for i in range(150))
    # Streams beyond the proxy's 100 waited for a free one; task connections were reused
    # (at most 16 at a time unless the task stalled for a moment: the pool's cap).
    assert len({r.json()["client_port"] for r in responses}) <= 100


def test_h2_pages_for_a_stopped_task_an_unknown_host_and_an_unreachable_one(
        proxy: ProxyHarness) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        deaf = s.getsockname()[1]
    proxy.set_routes("hdown", route("web", "web", 1, state="stopped", ready=False),
                     route("deaf", "deaf", deaf))
    with h2_client(proxy.ca_path) as client:
        stopped = client.get(url(proxy, "web.hdown.localhost"),
                             headers={"accept": "text/html"})
        unknown = client.get(url(proxy, "nope.hdown.localhost"))
        unreachable = client.get(url(proxy, "deaf.hdown.localhost"))
    assert stopped.http_version == "HTTP/2" and stopped.status_code == 502
    assert stopped.headers["x-taskmux-error"] == "task-not-ready"
    assert stopped.text.startswith("<!doctype html>") and "taskmux start web" in stopped.text
    assert unknown.status_code == 404 and "web.hdown.localhost" in unknown.text
    assert unreachable.status_code == 502
    assert unreachable.headers["x-taskmux-error"] == "backend-unreachable"
    assert str(deaf) in unreachable.text


@pytest.mark.parametrize("family", ["127.0.0.1", "::1"])
def test_h2_a_backend_on_one_loopback_family_only(proxy: ProxyHarness, family: str) -> None:
    if family == "::1":
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no ::1 on this machine")
    project = "hsix" if family == "::1" else "hfour"
    with backend("one", family) as web, h2_client(proxy.ca_path) as client:
        proxy.set_routes(project, route("web", "web", web.port))
        for _ in range(3):  # the address that answered is remembered: no failures after
            resp = client.get(url(proxy, f"web.{project}.localhost"))
            assert resp.http_version == "HTTP/2" and resp.json()["client"] == family


# -- a raw HTTP/2 client, for requests a browser never sends ---------------------------------

class RawH2:
    def __init__(self, proxy: ProxyHarness, name: str) -> None:
        ctx = ca_context(proxy.ca_path)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", proxy.https_port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=name)
        assert self.sock.selected_alpn_protocol() == "h2"
        config = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.settings: dict[int, int] = {}
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(self, name: str, path: str = "/", extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
                authority: bytes | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(b":method", b"GET"), (b":scheme", b"https"),
                  (b":authority", authority or name.encode()), (b":path", path.encode()),
                  *extra]
        self.conn.send_headers(sid, fields, end_stream=True)
        self.flush()
        return sid

    def events(self, until: type) -> list[Any]:
        seen: list[Any] = []
        while not any(isinstance(e, until) for e in seen):
            data = self.sock.recv(65536)
            if not data:
                break
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    self.settings.update({k: v.new_value for k, v in
                                          event.changed_settings.items()})
                seen.append(event)
            self.flush()
        return seen

    def status(self, sid: int) -> int:
        for event in self.events(h2.events.StreamEnded):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                return int(dict(event.headers)[b":status"])
        raise AssertionError("no response")

    def close(self) -> None:
        self.sock.close()


def test_h2_settings_bound_streams_and_headers_and_offer_extended_connect(
        proxy: ProxyHarness) -> None:
    with backend("web") as web:
        proxy.set_routes("hset", route("web", "web", web.port))
        client = RawH2(proxy, "web.hset.localhost")
        try:
            assert client.status(client.request("web.hset.localhost")) == 200
        finally:
            client.close()
    codes = h2.settings.SettingCodes
    assert client.settings[codes.MAX_CONCURRENT_STREAMS] == 100
    assert client.settings[codes.MAX_HEADER_LIST_SIZE] == 64 * 1024
    assert client.settings[codes.ENABLE_CONNECT_PROTOCOL] == 1  # WebSockets over h2


@pytest.mark.parametrize(("extra", "authority", "expect"), [
    ([(b"x(y)", b"1")], None, 400),  # not a token
    ([(b"x-a", b"a\x01b")], None, 400),  # a control character
    ([], b"web.hbad.localhost/x", 400),  # not an authority
    ([], b"web.other.localhost", 421),  # another project than the connection's
])
def test_h2_requests_http1_would_refuse_get_an_error_answer(
        proxy: ProxyHarness, extra: list[tuple[bytes, bytes]], authority: bytes | None,
        expect: int) -> None:
    with backend("web") as web:
        proxy.set_routes("hbad", route("web", "web", web.port))
        client = RawH2(proxy, "web.hbad.localhost")
        try:
            sid = client.request("web.hbad.localhost", extra=extra, authority=authority)
            assert client.status(sid) == expect
            # The connection carries on: the next request is served.
            assert client.status(client.request("web.hbad.localhost")) == 200
        finally:
            client.close()
        assert web.seen and all(path == "/" for _, path, _ in web.seen)


@pytest.mark.parametrize("extra", [[(b"connection", b"close")], [(b"X-Upper", b"1")],
                                   [(b"te", b"gzip")], [(b"x-a", b"a\r\nb: c")],
                                   [(b"host", b"other.hmal.localhost")],
                                   [(b"x-a", b" padded")], [(b"keep-alive", b"1")],
                                   [(b"x(y)", b"1"), (b"x-a", b"a\x00b")]])
def test_h2_malformed_header_lists_end_the_connection(
        proxy: ProxyHarness, extra: list[tuple[bytes, bytes]]) -> None:
    proxy.set_routes("hmal", route("web", "web", 1))
    client = RawH2(proxy, "web.hmal.localhost")
    try:
        client.request("web.hmal.localhost", extra=extra)
        events = client.events(h2.events.ConnectionTerminated)
    finally:
        client.close()
    ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert ended and ended[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR


def test_h2_an_oversized_header_list_is_refused(proxy: ProxyHarness) -> None:
    proxy.set_routes("hhuge", route("web", "web", 1))
    client = RawH2(proxy, "web.hhuge.localhost")
    try:
        client.request("web.hhuge.localhost",
                       extra=[(f"x-{i}".encode(), b"v" * 1000) for i in range(80)])
        events = client.events(h2.events.ConnectionTerminated)
    finally:
        client.close()
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


def test_h2_a_client_leaving_mid_stream_frees_everything(proxy: ProxyHarness) -> None:
    with backend("web") as web:
        proxy.set_routes("hleave", route("web", "web", web.port))
        client = RawH2(proxy, "web.hleave.localhost")
        sid = client.request("web.hleave.localhost", "/sse")
        events = client.events(h2.events.DataReceived)
        assert any(isinstance(e, h2.events.DataReceived) and e.stream_id == sid
                   for e in events)
        client.close()
        wait_until(lambda: proxy.status("proxy")["connections"] == 0,
                   what="the proxy to drop the connection")
        for gate in web.gate.events:
            gate.set()


def test_websockets_still_use_http1_upgrade_with_h2_on_offer(proxy: ProxyHarness) -> None:
    """A client that asks for HTTP/1.1 (as browsers without WebSockets over HTTP/2 do) gets
    its WebSocket upgrade served while the proxy offers h2 too."""
    from websockets.sync.server import ServerConnection, serve

    def echo_ws(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    with serve(echo_ws, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port = server.socket.getsockname()[1]
            proxy.set_routes("hws", route("chat", "chat", port))
            ctx = ca_context(proxy.ca_path)
            ctx.set_alpn_protocols(["http/1.1"])
            _, replies = wss_echo("chat.hws.localhost", proxy.https_port, ctx, ["hello"])
            assert replies == ["hello"]
        finally:
            server.shutdown()
            thread.join(5)


def test_h2_an_upload_waits_for_a_task_that_does_not_read(proxy: ProxyHarness) -> None:
    """The client's window reopens only as the task takes the bytes: against a task that
    accepts the connection and reads nothing, a client can push a bounded amount (the
    stream's window plus what the sockets hold), never the whole body."""
    with socket.socket() as deaf:
        deaf.bind(("127.0.0.1", 0))
        deaf.listen()
        proxy.set_routes("hslow", route("web", "web", deaf.getsockname()[1]))
        client = RawH2(proxy, "web.hslow.localhost")
        try:
            size = 256 * MB
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, [
                (b":method", b"POST"), (b":scheme", b"https"),
                (b":authority", b"web.hslow.localhost"), (b":path", b"/up"),
                (b"content-length", str(size).encode())])
            client.flush()
            sent, chunk = 0, b"x" * 16384
            client.sock.settimeout(2.0)
            while sent < size:
                window = client.conn.local_flow_control_window(sid)
                if window >= len(chunk):
                    client.conn.send_data(sid, chunk)
                    client.flush()
                    sent += len(chunk)
                    continue
                try:  # wait for a WINDOW_UPDATE; none within 2 s: the proxy holds back
                    data = client.sock.recv(65536)
                except TimeoutError:
                    break
                client.conn.receive_data(data)
                client.flush()
        finally:
            client.close()
    assert 1 * MB <= sent < 32 * MB, sent


def test_h2_streams_count_against_the_per_client_cap(tmp_path: Any) -> None:
    """Each task connection an h2 connection holds beyond its first takes a place in the
    client's connection count: with a cap of 3, three streams held open go through and the
    fourth gets a 503 page; once they end, their places are given back."""
    home = tempfile.mkdtemp(prefix="tmx-", dir=scratch.base())
    write_config(home, "proxy_max_connections_per_client = 3\n")
    daemon = DaemonProcess(home, daemon_env(home)).wait_ready()
    try:
        harness = ProxyHarness(daemon)
        with backend("web") as web:
            harness.set_routes("hcap", route("web", "web", web.port))
            client = RawH2(harness, "web.hcap.localhost")
            try:
                held = [client.request("web.hcap.localhost", "/sse") for _ in range(3)]
                extra = client.request("web.hcap.localhost", "/sse")
                assert client.status(extra) == 503
                assert harness.status("proxy")["limits"]["open"] == 3
                for gate in web.gate.events:
                    gate.set()  # the held streams finish
                ended: set[int] = set()
                while not set(held) <= ended:
                    ended |= {e.stream_id for e in client.events(h2.events.StreamEnded)
                              if isinstance(e, h2.events.StreamEnded)}
                # Their places are back: a leak of even one would refuse this request.
                assert client.status(client.request("web.hcap.localhost")) == 200
                before = harness.status("proxy")["limits"]["open"]
            finally:
                client.close()
        wait_until(lambda: harness.status("proxy")["limits"]["open"] < before,
                   what="the connection's place to be given back")
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_daemon_start_does_not_import_h2() -> None:
    """h2 and h11 are imported with the first HTTP/2 connection, not at daemon start."""
    import subprocess
    import sys

    code = ("import sys, taskmuxd.proxy.subsystem, taskmuxd.daemon; "
            "print(sorted(m for m in ('h2', 'h11', 'hpack') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.strip() == "[]"


def test_h2_expect_100_continue_is_answered_by_the_task(proxy: ProxyHarness) -> None:
    with backend("web") as web:
        proxy.set_routes("hcont", route("web", "web", web.port))
        client = RawH2(proxy, "web.hcont.localhost")
        try:
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, [
                (b":method", b"POST"), (b":scheme", b"https"),
                (b":authority", b"web.hcont.localhost"), (b":path", b"/up"),
                (b"content-length", b"3"), (b"expect", b"100-continue")])
            client.flush()
            first = client.events(h2.events.InformationalResponseReceived)
            interim = [e for e in first if isinstance(e, h2.events.InformationalResponseReceived)]
            assert dict(interim[0].headers)[b":status"] == b"100"
            client.conn.send_data(sid, b"x=1", end_stream=True)
            client.flush()
            assert client.status(sid) == 200
        finally:
            client.close()


def test_h2_a_rapid_reset_flood_ends_the_connection(proxy: ProxyHarness) -> None:
    """Streams opened and cancelled at once, over and over (CVE-2023-44487): past the
    allowance the proxy says ENHANCE_YOUR_CALM and closes."""
    from taskmuxd.proxy.h2side import MAX_RESETS

    with socket.socket() as deaf:
        deaf.bind(("127.0.0.1", 0))
        deaf.listen(1024)
        proxy.set_routes("hreset", route("web", "web", deaf.getsockname()[1]))
        client = RawH2(proxy, "web.hreset.localhost")
        fields = [(b":method", b"GET"), (b":scheme", b"https"),
                  (b":authority", b"web.hreset.localhost"), (b":path", b"/")]
        ended: list[Any] = []
        reset = False
        try:
            # Up to three times the allowance: the proxy counts cancels per RESET_WINDOW
            # seconds, and on busy cores the first thousand may take it a while to read.
            for _ in range(3 * MAX_RESETS // 50):
                for _ in range(50):
                    sid = client.conn.get_next_available_stream_id()
                    client.conn.send_headers(sid, fields, end_stream=True)
                    client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                try:
                    client.flush()
                except OSError:
                    reset = True  # the proxy closed after its GOAWAY
                    break
            try:
                # Returns at the GOAWAY or when the proxy closes; times out if neither comes.
                events = client.events(h2.events.ConnectionTerminated)
                reset = reset or not any(isinstance(e, h2.events.ConnectionTerminated)
                                         for e in events)
            except TimeoutError:
                events = []  # neither a GOAWAY nor a close: the flood went on
            except OSError:
                # A reset can discard the GOAWAY that preceded it (the kernel drops unread
                # data): the proxy closing is then all the client can see. On busy cores the
                # whole flood may be sent before the proxy reads it, so the reset comes here.
                events, reset = [], True
            ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        finally:
            client.close()
    if ended:
        assert ended[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    else:
        assert reset, "the flood went on and the proxy never ended the connection"


def test_h2_websocket_over_extended_connect(proxy: ProxyHarness) -> None:
    """RFC 8441: CONNECT with :protocol websocket becomes the task's HTTP/1.1 upgrade; the
    stream then carries WebSocket frames both ways (a real websockets server echoes)."""
    from websockets.frames import Frame, Opcode
    from websockets.sync.server import ServerConnection, serve

    def echo_ws(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    with serve(echo_ws, "127.0.0.1", 0, subprotocols=["chat.v2"]) as server:  # type: ignore[list-item]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            proxy.set_routes("hwsh2", route("chat", "chat", server.socket.getsockname()[1]))
            client = RawH2(proxy, "chat.hwsh2.localhost")
            try:
                client.events(h2.events.RemoteSettingsChanged)
                sid = client.conn.get_next_available_stream_id()
                client.conn.send_headers(sid, [
                    (b":method", b"CONNECT"), (b":protocol", b"websocket"),
                    (b":scheme", b"https"), (b":authority", b"chat.hwsh2.localhost"),
                    (b":path", b"/socket"), (b"sec-websocket-version", b"13"),
                    (b"sec-websocket-protocol", b"chat.v1, chat.v2")])
                client.flush()
                answer = client.events(h2.events.ResponseReceived)
                head = next(e for e in answer if isinstance(e, h2.events.ResponseReceived))
                fields = dict(head.headers)
                assert fields[b":status"] == b"200"
                assert fields[b"sec-websocket-protocol"] == b"chat.v2"
                assert b"sec-websocket-accept" not in fields
                frame = Frame(Opcode.TEXT, b"hello over h2")
                client.conn.send_data(sid, frame.serialize(mask=True, extensions=[]))
                client.flush()
                got = b""
                while len(got) < 15:
                    got += b"".join(e.data for e in client.events(h2.events.DataReceived)
                                    if isinstance(e, h2.events.DataReceived))
                assert got == b"\x81\x0dhello over h2"  # the echo, unmasked from the server
            finally:
                client.close()
        finally:
            server.shutdown()
            thread.join(5)


def test_h2_plain_connect_is_refused(proxy: ProxyHarness) -> None:
    with backend("web") as web:
        proxy.set_routes("hconn", route("web", "web", web.port))
        client = RawH2(proxy, "web.hconn.localhost")
        try:
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, [(b":method", b"CONNECT"),
                                           (b":authority", b"example.com:443")])
            client.flush()
            assert client.status(sid) == 405
        finally:
            client.close()
        assert web.seen == []  # nothing reached the task
