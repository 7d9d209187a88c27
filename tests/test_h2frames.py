"""The proxy's frame reader (``h2frames.Frames``) against h2's own ``FrameBuffer``: the same
byte sequences, well-formed and hostile, fed whole and in pieces, give the same frames
(type, stream, flags, every field) and the same errors, in the same place."""

from __future__ import annotations

import random
import struct

import pytest
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import Frame

from taskmuxd.proxy.h2frames import QUIET, Frames

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def raw(kind: int, flags: int, stream: int, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return struct.pack(">HBBBL", size >> 8, size & 0xFF, kind, flags, stream) + body


def described(frame: Frame) -> tuple[str, dict[str, object]]:
    fields = dict(vars(frame))
    fields["flags"] = sorted(frame.flags)
    fields["flags_valid"] = sorted(frame.flags._valid_flags)
    return type(frame).__name__, fields


def read(cls: type[FrameBuffer], data: bytes, pieces: list[int], max_frame: int
         ) -> list[object]:
    """What a buffer of ``cls`` yields for ``data`` fed in ``pieces``: frames, and the
    error that ended it (its type and message), if any."""
    buffer = cls(server=True)
    buffer.max_frame_size = max_frame
    out: list[object] = []
    pos = 0
    try:
        for size in [*pieces, len(data)]:
            buffer.add_data(data[pos:pos + size])
            pos += size
            for frame in buffer:
                out.append(described(frame))
            if pos >= len(data):
                break
    except Exception as exc:  # (h2's errors; hyperframe's for too much padding)
        out.append((type(exc).__name__, str(exc)))
    return out


def same(data: bytes, max_frame: int = 16384, pieces: list[int] | None = None) -> list[object]:
    theirs = read(FrameBuffer, PREFACE + data, pieces or [], max_frame)
    ours = read(Frames, PREFACE + data, pieces or [], max_frame)
    assert ours == theirs
    return ours


CASES: dict[str, bytes] = {
    "headers": raw(1, 0x5, 1, b"\x82\x86\x84"),
    "headers, no end of stream": raw(1, 0x4, 3, b"\x82"),
    "headers with priority": raw(1, 0x24, 1, b"\x80\x00\x00\x03\x10\x82"),
    "headers padded": raw(1, 0x0C, 1, b"\x02\x82\x00\x00"),
    "headers padded and with priority": raw(1, 0x2C, 1, b"\x01\x00\x00\x00\x00\x05\x82\x00"),
    "headers padding too long": raw(1, 0x0C, 1, b"\x05\x82"),
    "headers priority cut short": raw(1, 0x24, 1, b"\x00\x00"),
    # (as Chromium sends each request: exclusive, weight 256, END_HEADERS | END_STREAM)
    "headers with priority, as a browser": raw(1, 0x25, 7, b"\x80\x00\x00\x05\xff\x82\xc1\x04"),
    "headers with priority and no block": raw(1, 0x24, 3, b"\x00\x00\x00\x01\x00"),
    "headers with priority, no END_HEADERS": raw(1, 0x20, 3, b"\x00\x00\x00\x00\x0f\x82")
    + raw(9, 0x4, 3, b"\x86"),
    "headers on stream 0": raw(1, 0x4, 0, b"\x82"),
    "headers, undefined flags": raw(1, 0xFF ^ 0x28, 1, b"\x82"),
    "headers then continuation": raw(1, 0x1, 1, b"\x82") + raw(9, 0x0, 1, b"\x86")
    + raw(9, 0x4, 1, b"\x84"),
    "continuation on another stream": raw(1, 0x1, 1, b"\x82") + raw(9, 0x4, 3, b"\x86"),
    "data between continuations": raw(1, 0x1, 1, b"\x82") + raw(0, 0x0, 1, b"x"),
    "continuation alone": raw(9, 0x4, 1, b"\x86"),
    "continuation flood": raw(1, 0x1, 1, b"\x82") + raw(9, 0x0, 1, b"\x86") * 80,
    "continuation on stream 0": raw(1, 0x1, 1, b"\x82") + raw(9, 0x4, 0, b"\x86"),
    "data": raw(0, 0x1, 1, b"hello"),
    "data, empty": raw(0, 0x0, 1, b""),
    "data padded": raw(0, 0x09, 1, b"\x03hi\x00\x00\x00"),
    "data padded, no room": raw(0, 0x08, 1, b""),
    "data padding too long": raw(0, 0x08, 1, b"\x09hi"),
    "data on stream 0": raw(0, 0x0, 0, b"x"),
    "data, undefined flag 0x20": raw(0, 0x20, 1, b"x"),
    "window update": raw(8, 0, 0, b"\x00\x01\x00\x00") + raw(8, 0, 1, b"\x00\x00\x10\x00"),
    "window update, short": raw(8, 0, 0, b"\x00\x01"),
    "window update, zero": raw(8, 0, 1, b"\x00\x00\x00\x00"),
    "window update, reserved bit": raw(8, 0, 1, b"\x80\x00\x00\x01"),
    "settings": raw(4, 0, 0, b"\x00\x03\x00\x00\x00\x64\x00\x04\x00\x01\x00\x00"),
    "settings twice": raw(4, 0, 0, b"\x00\x03\x00\x00\x00\x64")
    + raw(4, 0, 0, b"\x00\x04\x00\x00\x00\x01"),
    "settings ack": raw(4, 0x1, 0, b""),
    "settings ack with payload": raw(4, 0x1, 0, b"\x00\x03\x00\x00\x00\x64"),
    "settings, bad length": raw(4, 0, 0, b"\x00\x03\x00"),
    "settings on a stream": raw(4, 0, 1, b""),
    "settings flood": raw(4, 0, 0, b"") * 200,
    "ping": raw(6, 0, 0, b"12345678"),
    "ping ack": raw(6, 0x1, 0, b"12345678"),
    "ping, short": raw(6, 0, 0, b"1234"),
    "ping on a stream": raw(6, 0, 3, b"12345678"),
    "rst stream": raw(3, 0, 1, b"\x00\x00\x00\x08"),
    "rst stream, short": raw(3, 0, 1, b"\x00\x08"),
    "rst stream on stream 0": raw(3, 0, 0, b"\x00\x00\x00\x08"),
    "rapid reset": b"".join(raw(1, 0x5, i, b"\x82\x86\x84") + raw(3, 0, i, b"\x00\x00\x00\x08")
                            for i in range(1, 400, 2)),
    "priority": raw(2, 0, 1, b"\x80\x00\x00\x03\x10"),
    "priority, short": raw(2, 0, 1, b"\x00\x00"),
    "priority on stream 0": raw(2, 0, 0, b"\x00\x00\x00\x03\x10"),
    "goaway": raw(7, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00debug"),
    "goaway, short": raw(7, 0, 0, b"\x00\x00"),
    "goaway on a stream": raw(7, 0, 1, b"\x00\x00\x00\x01\x00\x00\x00\x00"),
    "push promise": raw(5, 0x4, 1, b"\x00\x00\x00\x02\x82"),
    "altsvc": raw(10, 0, 0, b"\x00\x03abch2=\":443\""),
    "extension frame": raw(0x42, 0x7, 5, b"anything"),
    "extension frame, overlong": raw(0x42, 0, 0, b"x" * 20000),
    "overlong headers": raw(1, 0x4, 1, b"\x82" * 20000),
    "overlong data, body still missing": raw(0, 0, 1, b"", length=20000),
    "a frame cut short": raw(0, 0, 1, b"abc", length=10),
    "a header cut short": raw(0, 0, 1, b"abc")[:5],
    "reserved bit on the stream id": raw(1, 0x5, 0x80000001, b"\x82"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_same_frames_and_errors_as_h2s_buffer(name: str) -> None:
    data = CASES[name]
    same(data)
    same(data, pieces=[1] * (len(PREFACE) + min(len(data), 300)))  # byte at a time
    same(data, pieces=[len(PREFACE) + 4, 9, 1, 7])
    same(data, max_frame=4)


def test_what_the_cases_cover() -> None:
    """The corpus reaches h2's errors, not only its frames."""
    ends = [out[-1] for out in map(same, CASES.values()) if out]
    errors = {e[0] for e in ends if isinstance(e, tuple) and len(e) == 2
              and isinstance(e[0], str) and e[0].endswith("Error")}
    assert errors >= {"ProtocolError", "FrameTooLargeError", "FrameDataMissingError",
                      "InvalidPaddingError"}


def test_random_sequences_read_the_same() -> None:
    """Random frames of every type, flag byte and stream (valid or not), in random pieces."""
    rng = random.Random(17)
    for _ in range(400):
        data = b""
        for _ in range(rng.randrange(1, 8)):
            kind = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 0x33])
            body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 5, 6, 8, 13])))
            data += raw(kind, rng.randrange(256), rng.choice([0, 1, 3, 1, 1]), body)
        pieces = [rng.randrange(1, 20) for _ in range(10)]
        same(data, max_frame=rng.choice([8, 16384]), pieces=pieces)


def test_frames_are_quiet_and_their_state_their_own() -> None:
    buffer = Frames(server=True)
    buffer.max_frame_size = 16384
    buffer.add_data(PREFACE + CASES["settings twice"] + CASES["headers"] * 2)
    first, second, h1, h2 = list(buffer)
    assert first.settings == {3: 100} and second.settings == {4: 1}  # (not one shared dict)
    h1.flags.discard("END_STREAM")
    assert "END_STREAM" in h2.flags and "END_STREAM" not in h1.flags
    with pytest.raises(ValueError, match="Unexpected flag"):
        h1.flags.add("ACK")
    assert type(h1) is QUIET[type(h1).__mro__[1]]
    assert repr(h1) == "HeadersFrame(stream_id=1)"


def _connection_reads(data: bytes, pieces: list[int], h2s: bool) -> list[object]:
    """What ``h2side.Connection`` (a server) makes of the client's ``data`` fed in
    ``pieces``: per piece its events (as text), what it sends, and the error that ended it;
    with ``h2s``, the same connection reading through h2's own ``receive_data``."""
    import h2.config
    import h2.connection

    from taskmuxd.proxy.h2side import Connection

    conn = Connection(h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=False,
        normalize_inbound_headers=False, validate_outbound_headers=False,
        normalize_outbound_headers=False))
    conn.initiate_connection()
    conn.data_to_send()
    receive = (lambda d: h2.connection.H2Connection.receive_data(conn, d)) if h2s \
        else conn.receive_data
    out: list[object] = []
    pos = 0
    for size in [*pieces, len(data)]:
        try:
            events = receive(data[pos:pos + size])
        except Exception as exc:
            out.append((type(exc).__name__, str(exc), conn.data_to_send(),
                        conn.state_machine.state))
            break
        out.append(([repr(e) for e in events], conn.data_to_send()))
        pos += size
        if pos >= len(data):
            break
    return out


def _connection_same(data: bytes, pieces: list[int] | None = None) -> list[object]:
    settings = raw(4, 0, 0, b"")
    whole = PREFACE + settings + data
    ours = _connection_reads(whole, pieces or [], h2s=False)
    assert ours == _connection_reads(whole, pieces or [], h2s=True)
    return ours


@pytest.mark.parametrize("name", list(CASES))
def test_the_connection_reads_frames_as_through_h2s_receive_data(name: str) -> None:
    """``Connection.receive_data`` (frames taken without StopIteration) against h2's own
    ``receive_data`` on the same connection: the same events, bytes sent and errors."""
    data = CASES[name]
    _connection_same(data)
    _connection_same(data, pieces=[1] * (len(PREFACE) + 9 + min(len(data), 200)))
    _connection_same(data, pieces=[len(PREFACE) + 4, 9, 1, 7, 30])


def test_the_connection_reads_random_sequences_as_through_h2s() -> None:
    rng = random.Random(1717)
    outcomes = set()
    for _ in range(300):
        data = b""
        for _ in range(rng.randrange(1, 8)):
            kind = rng.choice([0, 1, 2, 3, 4, 6, 7, 8, 9, 0x33])
            body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 5, 8, 13])))
            data += raw(kind, rng.randrange(256), rng.choice([0, 1, 3, 1, 1]), body)
        out = _connection_same(data, pieces=[rng.randrange(1, 20) for _ in range(10)])
        outcomes.add(out[-1][0] if len(out[-1]) == 4 else "events")
    assert "events" in outcomes and "ProtocolError" in outcomes  # (both ways covered)
