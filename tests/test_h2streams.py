"""The proxy's count of open HTTP/2 streams (``h2side.Connection``) against h2's own, on a
connection with streams in every state a server sees; the limit on streams held with the
count made only near it."""

from __future__ import annotations

import copy

import h2.config
import h2.connection
import h2.exceptions
import h2.settings
import pytest
from h2.errors import ErrorCodes

from taskmuxd.proxy.h2encode import PlainEncoder
from taskmuxd.proxy.h2side import Connection


def test_open_streams_are_counted_and_closed_ones_dropped_as_h2_does() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    request = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.localhost"),
               (b":path", b"/")]
    sent = []
    for i in range(12):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, request, end_stream=i % 3 != 0)  # open / half closed
        sent.append(sid)
    server.receive_data(client.data_to_send())
    for sid in sent[:4]:  # answered: closed (or half closed where the request is still open)
        server.send_headers(sid, [(b":status", b"200")], end_stream=True)
    server.reset_stream(sent[5], ErrorCodes.CANCEL)
    server.send_headers(sent[6], [(b":status", b"200")])  # half closed here
    states = {sid: s.state_machine.state for sid, s in server.streams.items()}
    assert len(set(states.values())) >= 3, states
    theirs = copy.deepcopy(server)
    for remainder in (1, 0):
        expected = h2.connection.H2Connection._open_streams(theirs, remainder)
        assert server._open_streams(remainder) == expected
        assert server.streams.keys() == theirs.streams.keys()
        assert server._closed_streams == theirs._closed_streams
    mine = copy.deepcopy(server)
    for sid in sent:  # (what H2Side does as each stream's exchange ends)
        mine.forget_closed(sid)
    h2.connection.H2Connection._open_streams(theirs, 1)
    assert mine.streams.keys() == theirs.streams.keys()
    assert mine._closed_streams == theirs._closed_streams
    assert server._open_streams(1) == 9 and len(server._closed_streams) == 3
    # Below the limit the known streams stand for the open ones (an upper bound).
    assert server.open_inbound_streams == len(server.streams) == 9


def test_the_stream_limit_holds_with_closed_streams_dropped_when_it_is_near() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = Connection(h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=False,
        normalize_inbound_headers=False, validate_outbound_headers=False,
        normalize_outbound_headers=False))
    server.local_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 4})
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())  # (the client never hears of the limit)
    request = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.localhost"),
               (b":path", b"/")]

    def open_one() -> int:
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, request, end_stream=True)
        server.receive_data(client.data_to_send())
        return sid

    sids = [open_one() for _ in range(4)]
    for sid in sids[:2]:  # two answered: closed, but still known
        server.send_headers(sid, [(b":status", b"204")], end_stream=True)
    assert len(server.streams) == 4
    sids += [open_one(), open_one()]  # fit: the count dropped the closed two
    assert len(server.streams) == 4 and server._open_streams(1) == 4
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        open_one()  # a fifth open one


def _pair(cls: type[h2.connection.H2Connection]) -> tuple[h2.connection.H2Connection,
                                                          h2.connection.H2Connection]:
    """A client and a server of ``cls`` (validation off, as the proxy has it), connected."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = cls(h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=False,
        normalize_inbound_headers=False, validate_outbound_headers=False,
        normalize_outbound_headers=False))
    server.encoder = PlainEncoder()
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.data_to_send()
    return client, server


def test_lean_response_frames_are_the_bytes_h2_writes() -> None:
    """Heads (interim, final, ending the stream, larger than a frame) and DATA (as bytes or a
    memoryview, ending the stream or not) from ``_Stream`` are byte for byte h2's."""
    big = [(b":status", b"200"), *[(b"x-field-%d" % i, b"v" * 200) for i in range(120)]]
    request = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.localhost"),
               (b":path", b"/")]
    wires: list[list[bytes]] = []
    for cls in (h2.connection.H2Connection, Connection):
        client, server = _pair(cls)
        wire = []
        for sid in (1, 3, 5, 7):
            client.send_headers(sid, request, end_stream=True)
            server.receive_data(client.data_to_send())
        server.send_headers(1, [(b":status", b"103"), (b"link", b"</a.js>; rel=preload")])
        server.send_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")])
        server.send_data(1, b"hello ")
        server.send_data(1, memoryview(b"world"), end_stream=True)
        wire.append(server.data_to_send())
        server.send_headers(3, [(b":status", b"204")], end_stream=True)
        server.send_headers(5, big)  # (HEADERS and CONTINUATION frames)
        server.send_data(5, b"", end_stream=True)
        wire.append(server.data_to_send())
        with pytest.raises(h2.exceptions.ProtocolError):
            server.send_headers(7, [(b":status", b"100")], end_stream=True)
        events = client.receive_data(b"".join(wire))
        assert [type(e).__name__ for e in events].count("StreamEnded") == 3
        wires.append(wire)
        windows = (server.outbound_flow_control_window, server.local_flow_control_window(7))
        wire.append(b"%d %d" % windows)
    assert wires[0] == wires[1]
    assert type(server.streams[5]).__name__ == "_Stream"  # (the lean one was used)


def _header_outcome(stream: object, headers: list[tuple[bytes, bytes]], end: bool
                    ) -> object:
    try:
        frames, events = stream.receive_headers(headers, end, None)  # type: ignore[attr-defined]
        result: object = (frames, [(type(e).__name__, sorted(vars(e).items(), key=str))
                                   for e in events])
    except h2.exceptions.ProtocolError as exc:
        result = (type(exc).__name__, str(exc))
    return (result, stream.state_machine.state,  # type: ignore[attr-defined]
            stream._expected_content_length)  # type: ignore[attr-defined]


def test_headers_are_received_as_h2_receives_them() -> None:
    """``_Stream.receive_headers`` against h2's: requests, trailers, informational and
    faulty header lists, on a new stream and on one already open."""
    from h2.stream import H2Stream

    from taskmuxd.proxy.h2side import _Stream
    from taskmuxd.proxy.h2states import StreamStates

    config = h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=False,
        normalize_inbound_headers=False, validate_outbound_headers=False,
        normalize_outbound_headers=False)
    get = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"),
           (b":authority", b"a.localhost")]
    post = [(b":method", b"POST"), *get[1:], (b"content-length", b"12")]
    lists = [get, post, [*post, (b"content-length", b"13")], [*post[:-1], (b"content-length",
             b"1x")], [(b":status", b"103"), (b"link", b"</a>")], [(b":status", b"200")],
             [(b"x-trailer", b"1")], [], [(b":path", b"/"), (b":status", b"100")]]
    for headers in lists:
        for end in (False, True):
            for opened in (False, True):
                streams = []
                for ours in (False, True):
                    stream = H2Stream(1, config, 65535, 65535)
                    if ours:
                        stream.__class__ = _Stream
                        stream.state_machine.__class__ = StreamStates
                    if opened:
                        stream.receive_headers(list(get), False, None)
                    streams.append(stream)
                theirs, mine = (_header_outcome(s, list(headers), end) for s in streams)
                assert mine == theirs, (headers, end, opened)


def _events_of(conn: h2.connection.H2Connection, data: bytes) -> object:
    try:
        events = conn.receive_data(data)
        result: object = [(type(e).__name__, sorted(
            (k, repr(v) if k in ("stream_ended", "priority_updated") else v)
            for k, v in vars(e).items())) for e in events]
    except h2.exceptions.ProtocolError as exc:
        result = (type(exc).__name__, str(exc))
    return result, conn.data_to_send(), conn.state_machine.state, sorted(
        (sid, s.state_machine.state, s.outbound_flow_control_window,
         s._inbound_window_manager.current_window_size, s.max_outbound_frame_size)
        for sid, s in conn.streams.items()), conn.highest_inbound_stream_id


def test_header_frames_are_received_as_h2_receives_them() -> None:
    """Our connection against h2's, both with checks off, on what a client sends: requests
    with and without priority, a second HEADERS (trailers), a stream ID too low or even,
    headers on a closed stream, more streams than allowed."""
    def config(client: bool) -> h2.config.H2Configuration:
        return h2.config.H2Configuration(
            client_side=client, header_encoding=None, validate_inbound_headers=False,
            normalize_inbound_headers=False, validate_outbound_headers=False,
            normalize_outbound_headers=False)

    get = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"),
           (b":authority", b"a.localhost")]

    def raw_headers(sid: int, flags: int, block: bytes) -> bytes:
        return (len(block).to_bytes(3, "big") + bytes([1, flags])
                + sid.to_bytes(4, "big") + block)

    encoder = h2.connection.Encoder()
    block = encoder.encode(get)
    scripts = [
        [(1, False, None), (3, True, None), (5, True, (1, 20, True))],
        [(1, False, None), (1, True, None)],  # trailers
        [(5, True, None), (3, True, None)],  # too low
        [(2, True, None)],  # even
        [(1, True, None), ("close", 1), (1, True, None)],  # on a closed stream
        [(1, True, None), ("close", 1), ("close", 1), ("close", 3)],  # answers, twice
        [*[(i, False, None) for i in range(1, 12, 2)]],  # beyond the limit of 4
        # (as Chromium: every request with priority, each on the one before, exclusive)
        [(1, True, (0, 256, True)), (3, True, (1, 256, True)), (5, False, (3, 147, True))],
        [(1, False, (0, 16, False)), (1, True, (0, 32, False))],  # trailers, with priority
        [(3, True, (3, 16, False))],  # on itself
        [(1, True, (0, 16, False)), ("close", 1), (1, True, (0, 16, False))],  # closed
        [(5, True, (0, 16, False)), (3, True, (0, 16, False))],  # too low, with priority
        [*[(i, False, (0, 1, False)) for i in range(1, 12, 2)]],  # beyond the limit
    ]
    for script in scripts:
        sides = []
        for ours in (False, True):
            conn = Connection(config(False)) if ours else h2.connection.H2Connection(
                config(False))
            conn.local_settings = h2.settings.Settings(client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 4})
            conn.initiate_connection()
            conn.data_to_send()
            # (the client's SETTINGS: an initial window and a frame size of its own)
            settings = b"\x00\x04\x00\x00\x90\x00" + b"\x00\x05\x00\x00\x80\x00"
            conn.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x0c\x04\x00"
                              + bytes(4) + settings)
            sides.append(conn)
        for step in script:
            outcomes = []
            if step[0] == "close":
                for conn in sides:
                    try:
                        conn.send_headers(step[1], [(b":status", b"200")], end_stream=True)
                        outcomes.append(conn.data_to_send())
                    except h2.exceptions.ProtocolError as exc:
                        outcomes.append((type(exc).__name__, str(exc)))
                assert outcomes[0] == outcomes[1], (script, step)
                continue
            sid, end, priority = step
            flags = 0x4 | (0x1 if end else 0)
            body = block  # (the same block each time: its literals are added again)
            if priority is not None:
                dep, weight, exclusive = priority
                body = ((dep | (0x80000000 if exclusive else 0)).to_bytes(4, "big")
                        + bytes([weight - 1]) + body)
                flags |= 0x20
            data = raw_headers(sid, flags, body)
            outcomes = [_events_of(conn, data) for conn in sides]
            assert outcomes[0] == outcomes[1], (script, step)
            assert outcomes[0][0], (script, step)


def test_what_is_sent_comes_out_as_from_h2() -> None:
    """Frames queued as pieces (``Connection._prepare_for_sending``) come out of
    ``data_to_send`` as h2's buffer gives them, whole or in parts, in order with what h2
    writes to its buffer itself."""
    def pair() -> list[h2.connection.H2Connection]:
        conns = []
        for conn in (h2.connection.H2Connection(h2.config.H2Configuration(
                client_side=False)), Connection(h2.config.H2Configuration(client_side=False))):
            conn.initiate_connection()
            conn.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00"
                              + bytes(4) + b"\x00\x00\x08\x06\x00" + bytes(4) + b"12345678")
            conns.append(conn)
        return conns

    for amounts in ([None], [5, None], [9, 30, 1000, None], [0, 3]):
        theirs, ours = pair()
        for conn in (theirs, ours):
            conn.ping(b"abcdefgh")
            conn._data_to_send += b"(h2's own write)"
            conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 7})
        for amount in amounts:
            assert ours.data_to_send(amount) == theirs.data_to_send(amount), amounts
            ours.ping(b"12345678")
            theirs.ping(b"12345678")
        assert ours.data_to_send() == theirs.data_to_send()
        ours.ping(b"x" * 8)
        ours.clear_outbound_data_buffer()
        assert ours.data_to_send() == b""


def test_data_is_sent_as_h2_sends_it() -> None:
    """``Connection.send_data`` against h2's: within and beyond the windows and the frame
    size, empty, as a memoryview, ending the stream, on an ended, closed or unknown stream,
    with padding: the same bytes, windows and errors."""
    request = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"a.localhost"),
               (b":path", b"/")]
    steps: list[tuple[int, object, bool, int | None]] = [
        (1, b"x" * 100, False, None), (1, memoryview(b"y" * 10), False, None),
        (1, b"", False, None), (1, b"z" * 16385, False, None),  # beyond the frame size
        (3, b"a" * 16384, False, None), (3, b"a" * 16384, False, None),
        (3, b"a" * 16384, False, None), (3, b"a" * 16384, False, None),  # the stream's window
        (5, b"b" * 16000, False, None), (5, b"b", False, 3),  # padded: h2's own
        (5, b"end", True, None), (5, b"after", False, None), (5, b"", False, None),
        (7, b"c", True, None), (9, b"never opened", False, None), (2, b"", False, None),
        (1, b"d" * 16384, False, None), (1, b"d" * 16384, False, None),  # the connection's
        (1, b"d" * 200, False, None),
    ]
    results = []
    for cls in (h2.connection.H2Connection, Connection):
        client, server = _pair(cls)
        for sid in (1, 3, 5, 7):
            client.send_headers(sid, request)
            server.receive_data(client.data_to_send())
        server.send_headers(7, [(b":status", b"200")], end_stream=True)
        client.receive_data(server.data_to_send())
        client.reset_stream(7)
        server.receive_data(client.data_to_send())
        server.data_to_send()
        outcomes: list[object] = []
        for sid, data, end, pad in steps:
            try:
                server.send_data(sid, data, end_stream=end, pad_length=pad)  # type: ignore[arg-type]
                outcomes.append(server.data_to_send())
            except Exception as exc:  # (h2's errors; a KeyError for nothing on no stream)
                outcomes.append((type(exc).__name__, str(exc)))
            windows = [server.outbound_flow_control_window]
            for known in (1, 3, 5):
                stream = server.streams.get(known)
                windows.append(stream.outbound_flow_control_window if stream else None)
            outcomes.append((windows, server.state_machine.state))
        results.append(outcomes)
    assert results[0] == results[1]
    kinds = {o[0] for o in results[0] if isinstance(o, tuple) and isinstance(o[0], str)}
    assert kinds >= {"FlowControlError", "FrameTooLargeError", "StreamClosedError",
                     "NoSuchStreamError"}
