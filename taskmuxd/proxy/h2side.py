"""One HTTP/2 client connection of the proxy (ALPN ``h2``), as an asyncio protocol.

The h2 library keeps the protocol's state; this class feeds it the client's bytes and acts
on its events. Each request stream is an ``Exchange`` (``h2exchange``) with its own HTTP/1.1
connection to the task, taken from the proxy's pool.

Flow control, both ways, never holds a whole body:
- the client's request data is acknowledged (its window reopened) only once the task's
  connection took it without pushing back, so an upload runs at the task's pace and at most
  a window's worth waits here;
- the task's response data goes out as far as the client's windows allow; the rest waits and
  the task's connection stops being read until a WINDOW_UPDATE makes room, and all of them
  stop while the client's own TLS connection has a full write buffer.

Limits: at most ``MAX_STREAMS`` streams at once (SETTINGS_MAX_CONCURRENT_STREAMS, enforced by
h2), a header list of at most ``MAX_HEADER_LIST`` bytes, at most ``MAX_RESETS`` streams the
client cancels in ``RESET_WINDOW`` seconds (against "rapid reset" floods).

WebSockets over HTTP/2 (extended CONNECT, RFC 8441, advertised with
SETTINGS_ENABLE_CONNECT_PROTOCOL) reach the task as the HTTP/1.1 upgrade it knows; after its
101 the stream carries the WebSocket's bytes both ways, under the same flow control.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
from h2.connection import AllowedStreamIDs, ConnectionInputs
from h2.errors import ErrorCodes
from h2.stream import H2Stream, StreamInputs, StreamState
from h2.utilities import HeaderValidationFlags
from hpack import Encoder
from hyperframe.exceptions import InvalidPaddingError

from taskmuxd.proxy.forward import LINGER
from taskmuxd.proxy.h2decode import LeanDecoder
from taskmuxd.proxy.h2encode import PlainEncoder
from taskmuxd.proxy.h2exchange import Exchange
from taskmuxd.proxy.h2frames import QUIET, Frames
from taskmuxd.proxy.h2headers import Malformed, trailers
from taskmuxd.proxy.h2states import ConnectionStates, StreamStates
from taskmuxd.proxy.pool import BackendPool
from taskmuxd.proxy.tlsconn import HIGH_WATER, TlsTransport

if TYPE_CHECKING:
    from taskmuxd.proxy.h2view import H2ProxyView

log = logging.getLogger("taskmuxd.proxy")

MAX_STREAMS = 100
MAX_HEADER_LIST = 64 * 1024
STREAM_WINDOW = 1024 * 1024
CONNECTION_WINDOW = 4 * 1024 * 1024
MAX_FRAME = 256 * 1024  # larger DATA frames from the client: fewer to parse per upload
MAX_RESETS = 1000  # streams the client cancels within RESET_WINDOW seconds
RESET_WINDOW = 10.0
# Unsent bytes to the client beyond which the client's frames are not read (answers to its
# PINGs and SETTINGS pile up there otherwise when it does not read).
MAX_UNSENT = 4 * HIGH_WATER


_OPEN, _REMOTE_DONE, _LOCAL_DONE, _CLOSED = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE,
                                             StreamState.HALF_CLOSED_LOCAL, StreamState.CLOSED)


_NO_CHECKS = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False,
                                   is_push_promise=False)


_FRAME_HEAD = struct.Struct(">HBBBL")  # length (24 bits, as 16 + 8), type, flags, stream
_DATA, _HEADERS, _CONTINUATION = 0x0, 0x1, 0x9
_END_STREAM, _END_HEADERS = 0x1, 0x4


class _Ready:
    """A frame already serialized: all that h2's sending path asks of the frames a stream
    hands it (``serialize`` and ``body_len``)."""

    __slots__ = ("body_len", "data")

    def __init__(self, kind: int, flags: int, stream_id: int, body: bytes) -> None:
        size = self.body_len = len(body)
        self.data = _FRAME_HEAD.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + body

    def serialize(self) -> bytes:
        return self.data


class _Stream(h2.stream.H2Stream):
    """h2's stream, leaner where a proxy's server streams spend, when ``H2Side`` has header
    validation and normalization switched off (both ways):

    - no flags are built for every header block to steer them (nothing reads them then);
    - a response's HEADERS (and CONTINUATION) frames and its DATA frames are written as
      bytes at once, through the same state transitions, flow-control accounting and
      header encoder as h2's, rather than as frame objects serialized later. What is not
      a server's response head of byte fields, or DATA with padding, goes to h2's own."""

    def _build_hdr_validation_flags(self, events: Any) -> HeaderValidationFlags:
        return _NO_CHECKS

    def send_headers(self, headers: Iterable[Any], encoder: Encoder,
                     end_stream: bool = False) -> list[Any]:
        if self.state_machine.client or not isinstance(headers, list) or not headers \
                or headers[0][0] != b":status" or not isinstance(headers[0][1], bytes):
            return super().send_headers(headers, encoder, end_stream)
        interim = headers[0][1][:1] == b"1"
        if interim and end_stream:
            raise h2.exceptions.ProtocolError(
                "Cannot set END_STREAM on informational responses.")
        self.state_machine.process_input(
            StreamInputs.SEND_INFORMATIONAL_HEADERS if interim else StreamInputs.SEND_HEADERS)
        block = encoder.encode(headers)
        flags = 0
        if end_stream:
            self.state_machine.process_input(StreamInputs.SEND_END_STREAM)
            flags = _END_STREAM
        if self.state_machine.trailers_sent and not end_stream:
            raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set.")
        self.request_method = None  # (as h2 leaves it: a response has no :method)
        most = self.max_outbound_frame_size or 16384  # (h2 always sets it)
        if len(block) <= most:
            return [_Ready(_HEADERS, flags | _END_HEADERS, self.stream_id, block)]
        pieces = [block[i:i + most] for i in range(0, len(block), most)]
        frames = [_Ready(_HEADERS, flags, self.stream_id, pieces[0])]
        frames += [_Ready(_CONTINUATION, 0, self.stream_id, p) for p in pieces[1:-1]]
        frames.append(_Ready(_CONTINUATION, _END_HEADERS, self.stream_id, pieces[-1]))
        return frames

    def receive_headers(self, headers: Iterable[Any], end_stream: bool,
                        header_encoding: bool | str | None) -> tuple[list[Any], list[Any]]:
        """h2's, in one place: the header list as the decoder made it (h2 copies it, since
        its checks, off here, would make another)."""
        if header_encoding or not isinstance(headers, list):
            return super().receive_headers(headers, end_stream, header_encoding)
        informational = False
        for name, value in headers:  # (h2's is_informational_response)
            if name[:1] != b":":
                break
            if name == b":status":
                informational = value[:1] == b"1"
                break
        machine = self.state_machine
        if informational:
            if end_stream:
                raise h2.exceptions.ProtocolError(
                    "Cannot set END_STREAM on informational responses")
            events = machine.process_input(StreamInputs.RECV_INFORMATIONAL_HEADERS)
        else:
            events = machine.process_input(StreamInputs.RECV_HEADERS)
        headers_event: Any = events[0]
        if end_stream:
            ended = machine.process_input(StreamInputs.RECV_END_STREAM)
            headers_event.stream_ended = ended[0]
            events += ended
        self._initialize_content_length(headers)
        if isinstance(headers_event, h2.events.TrailersReceived) and not end_stream:
            raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set")
        headers_event.headers = headers
        return [], events

    def send_data(self, data: bytes | memoryview, end_stream: bool = False,
                  pad_length: int | None = None) -> list[Any]:
        if pad_length is not None:
            return super().send_data(data, end_stream, pad_length)
        self.state_machine.process_input(StreamInputs.SEND_DATA)
        if isinstance(data, memoryview):
            data = data.tobytes()
        flags = 0
        if end_stream:
            self.state_machine.process_input(StreamInputs.SEND_END_STREAM)
            flags = _END_STREAM
        self.outbound_flow_control_window -= len(data)
        return [_Ready(_DATA, flags, self.stream_id, data)]


_CLIENT_IDS = AllowedStreamIDs.ODD  # (the streams a client opens)
_HEADER_EVENTS = (h2.events.RequestReceived, h2.events.ResponseReceived,
                  h2.events.TrailersReceived, h2.events.InformationalResponseReceived)
_OPTIONS = ("client_side", "header_encoding", "validate_outbound_headers",
            "normalize_outbound_headers", "split_outbound_cookies", "validate_inbound_headers",
            "normalize_inbound_headers", "logger")


class _PlainConfig(h2.config.H2Configuration):
    """h2's configuration with its options as plain attributes: h2 reads some of them
    (``client_side``, ``header_encoding``...) for every frame, each through a descriptor's
    Python-level ``__get__``."""

    client_side = validate_outbound_headers = normalize_outbound_headers = False
    split_outbound_cookies = validate_inbound_headers = normalize_inbound_headers = False
    header_encoding = None


def plain_config(checked: h2.config.H2Configuration) -> h2.config.H2Configuration:
    """``checked`` (its values checked by h2 as it was made) as a ``_PlainConfig``."""
    plain = _PlainConfig.__new__(_PlainConfig)
    vars(plain).update({name: getattr(checked, name) for name in _OPTIONS})
    return plain


class Connection(h2.connection.H2Connection):
    """h2's connection, made cheaper where a page of hundreds of small requests spends:

    - h2 counts its open streams, over all of them, for every new stream the client opens,
      to hold SETTINGS_MAX_CONCURRENT_STREAMS. Fewer streams known than that limit are
      fewer open ones too, so the count is only made (and the closed streams dropped from
      ``streams``, as h2 does) once as many streams are known as the limit allows: the
      same answer to the question h2 asks (whether one more stream fits), made once per
      hundred streams rather than once per stream;
    - frames are read by ``h2frames.Frames`` (the same frames, made for less), taken
      from it without the iterator's StopIteration at the end of each read and without
      h2's trace call;
    - streams are ``_Stream``s when header validation is off;
    - the connection's and its streams' state machines find their transitions faster
      (``h2states``);
    - a request's HEADERS frame is received, and an answer's HEADERS sent on a known
      stream, without making h2's enum of allowed stream IDs anew each time (a frame with
      priority, or an unknown stream, goes to h2's own);
    - frames to send are kept as pieces joined once as they go out;
    - DATA without padding is sent on a known stream looked up once, without h2's debug
      calls."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        # Frames to send, before whatever h2 wrote to ``_data_to_send`` since.
        self._pieces: list[bytes] = []
        self.incoming_buffer = Frames(server=not config.client_side)
        self.state_machine.__class__ = ConnectionStates
        self._unchecked = not (config.validate_inbound_headers
                               or config.normalize_inbound_headers
                               or config.validate_outbound_headers
                               or config.normalize_outbound_headers)
        table = self._frame_dispatch_table
        for cls, quiet in QUIET.items():
            if cls in table:
                table[quiet] = table[cls]

    def receive_data(self, data: Any) -> list[h2.events.Event]:
        """h2's: the bytes added to the frame buffer, each whole frame received, the same
        errors (the connection terminated first), with frames taken by
        ``Frames.next_frame``."""
        buffer = self.incoming_buffer
        if not isinstance(buffer, Frames):
            return super().receive_data(data)
        buffer.add(data)
        buffer.max_frame_size = self.max_inbound_frame_size
        events: list[h2.events.Event] = []
        try:
            frame = buffer.next_frame()
            while frame is not None:
                got = self._receive_frame(frame)
                if got:
                    events += got
                frame = buffer.next_frame()
        except InvalidPaddingError as exc:
            self._terminate_connection(ErrorCodes.PROTOCOL_ERROR)
            raise h2.exceptions.ProtocolError("Received frame with invalid padding.") from exc
        except h2.exceptions.ProtocolError as exc:
            self._terminate_connection(exc.error_code)
            raise
        return events

    def _receive_headers_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        """h2's, less the making of its enum of allowed stream IDs anew for each request
        (an enum call in Python). A HEADERS frame with priority (Chromium sends every
        request so) is taken as h2 takes it: its PriorityUpdated after the stream's
        events, and hung on the first of them."""
        if self.config.client_side:
            return super()._receive_headers_frame(frame)
        if frame.stream_id not in self.streams:
            most = self.local_settings.max_concurrent_streams
            value = len(self.streams)  # (``open_inbound_streams``, the limit read once)
            if value >= most:
                value = self._open_streams(1)
            if value + 1 > most:
                raise h2.exceptions.TooManyStreamsError(
                    f"Max inbound streams is {most}, {value} open")
        headers = h2.connection._decode_headers(self.decoder, frame.data)
        events = self.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
        stream = self._get_or_create_stream(frame.stream_id, _CLIENT_IDS)
        flags = frame.flags
        frames, stream_events = stream.receive_headers(
            headers, "END_STREAM" in flags, self.config.header_encoding)
        if "PRIORITY" in flags:
            p_frames, p_events = self._receive_priority_frame(frame)
            assert isinstance(stream_events[0], _HEADER_EVENTS)  # (as h2 asserts)
            assert isinstance(p_events[0], h2.events.PriorityUpdated)
            stream_events[0].priority_updated = p_events[0]
            stream_events.extend(p_events)
            assert not p_frames
        return frames, events + stream_events

    def send_headers(self, stream_id: int, headers: Iterable[Any], end_stream: bool = False,
                     priority_weight: int | None = None, priority_depends_on: int | None = None,
                     priority_exclusive: bool | None = None) -> None:
        """h2's, for a server's answer on a stream the client opened: the same steps, less
        the making of h2's enum of allowed stream IDs (the stream is known: not used)."""
        stream = self.streams.get(stream_id)
        if stream is None or self.config.client_side or priority_weight is not None \
                or priority_depends_on is not None or priority_exclusive is not None:
            super().send_headers(stream_id, headers, end_stream, priority_weight,
                                 priority_depends_on, priority_exclusive)
            return
        self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        self._prepare_for_sending(stream.send_headers(headers, self.encoder, end_stream))

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False,
                  pad_length: Any = None) -> None:
        """h2's, for DATA without padding on a known stream: the same checks and errors in
        the same order (the windows, the frame size, the connection's state, the stream's),
        with the stream looked up once and no debug calls. Else h2's own."""
        stream = self.streams.get(stream_id)
        if stream is None or pad_length is not None:
            super().send_data(stream_id, data, end_stream, pad_length)
            return
        size = len(data)
        if size:
            window = min(self.outbound_flow_control_window, stream.outbound_flow_control_window)
            if size > window:
                raise h2.exceptions.FlowControlError(
                    f"Cannot send {size} bytes, flow control window is {window}")
        if size > self.max_outbound_frame_size:
            raise h2.exceptions.FrameTooLargeError(
                f"Cannot send frame size {size}, max frame size is "
                f"{self.max_outbound_frame_size}")
        self.state_machine.process_input(ConnectionInputs.SEND_DATA)
        self._prepare_for_sending(stream.send_data(data, end_stream))
        self.outbound_flow_control_window -= size
        assert self.outbound_flow_control_window >= 0 or not size  # (as h2 asserts)

    def _begin_new_stream(self, stream_id: int, allowed_ids: AllowedStreamIDs) -> H2Stream:
        """h2's, and for a stream the client opens on a server's connection the same steps
        without its trace calls and enum conversions: the ID above the highest so far and
        odd, the stream made with the windows of both sides' settings."""
        if self.config.client_side or not stream_id % 2 or allowed_ids is not _CLIENT_IDS:
            stream = super()._begin_new_stream(stream_id, allowed_ids)
        else:
            highest = self.highest_inbound_stream_id
            if stream_id <= highest:
                raise h2.exceptions.StreamIDTooLowError(stream_id, highest)
            stream = H2Stream(stream_id, config=self.config,
                              inbound_window_size=self.local_settings.initial_window_size,
                              outbound_window_size=self.remote_settings.initial_window_size)
            stream.max_outbound_frame_size = self.max_outbound_frame_size
            self.streams[stream_id] = stream
            self.highest_inbound_stream_id = stream_id
        stream.state_machine.__class__ = StreamStates
        if self._unchecked:
            stream.__class__ = _Stream
        return stream

    @property
    def open_inbound_streams(self) -> int:
        """The number of open streams the client opened, or the number of streams known
        when that is below SETTINGS_MAX_CONCURRENT_STREAMS (an upper bound that is enough
        for the one use h2 makes of it: whether a new stream fits under the limit)."""
        known = len(self.streams)
        if known < self.local_settings.max_concurrent_streams:
            return known
        return self._open_streams(1)

    def _prepare_for_sending(self, frames: list[Any]) -> None:
        """h2's, the frames' bytes kept as a list of pieces joined once when sent (h2
        appends them to one growing buffer, copied again as it is taken)."""
        if self._data_to_send:  # (written there by h2 itself: it goes first)
            self._pieces.append(bytes(self._data_to_send))
            self._data_to_send = bytearray()
        most = self.max_outbound_frame_size
        for frame in frames:
            self._pieces.append(frame.serialize())
            assert frame.body_len <= most  # (as h2 asserts)

    def data_to_send(self, amount: int | None = None) -> bytes:
        pieces = self._pieces
        if pieces:
            if self._data_to_send:  # (written there by h2 itself, after the pieces)
                pieces.append(bytes(self._data_to_send))
            data = b"".join(pieces)
            pieces.clear()
            if amount is None:
                self._data_to_send = bytearray()
                return data
            self._data_to_send = bytearray(data)
        return super().data_to_send(amount)

    def clear_outbound_data_buffer(self) -> None:
        self._pieces.clear()
        super().clear_outbound_data_buffer()

    def forget_closed(self, stream_id: int) -> None:
        """Drop ``stream_id`` from ``streams`` now if it is closed, as h2 drops closed
        streams when it counts: the streams known then stay close to the open ones, and
        a new stream seldom needs the count made at all."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.state_machine.state is _CLOSED:
            del self.streams[stream_id]
            self._closed_streams[stream_id] = stream.closed_by

    def _open_streams(self, remainder: int) -> int:
        count = 0
        closed = []
        for stream_id, stream in self.streams.items():
            state = stream.state_machine.state
            if state is _OPEN or state is _REMOTE_DONE or state is _LOCAL_DONE:
                if stream_id % 2 == remainder:
                    count += 1
            elif state is _CLOSED:
                closed.append(stream_id)
        for stream_id in closed:
            self._closed_streams[stream_id] = self.streams.pop(stream_id).closed_by
        return count


class H2Side(asyncio.Protocol):
    def __init__(self, proxy: H2ProxyView, admitted: str | None = None,
                 sni_project: str | None = None) -> None:
        self.proxy = proxy
        self.admitted = admitted
        self.sni_project = sni_project
        self.sni_host: str | None = None  # the last :authority found under sni_project
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.client_ip = "unknown"
        # What the client sends is checked by ``h2headers`` (as h2 would, and for HTTP/1.1;
        # cookies joined there too); what goes out is the task's answer as ``h1client`` read
        # it (strictly), with names lowered and connection fields dropped
        # (``h2headers.response``). So h2 need not go over either, and the answer is encoded
        # cheaply (``h2encode``).
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_inbound_headers=False,
                                           normalize_inbound_headers=False,
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        self.conn = Connection(plain_config(config))
        self.conn.encoder = PlainEncoder()
        self.conn.decoder = LeanDecoder()
        self.exchanges: dict[int, Exchange] = {}
        self.closing = False
        self.out_paused = False  # the client's TLS write buffer is full
        self.resets = 0
        self._resets_since = time.monotonic()
        self.slots = 0  # task connections held for this client's streams
        self._flush_soon = False
        self.idle_since: float | None = time.monotonic()
        if proxy.pool is None:
            proxy.pool = BackendPool(proxy)
        self.pool: BackendPool = proxy.pool

    # -- the client's transport -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else "unknown"
        self.proxy.clients.add(self)
        codes = h2.settings.SettingCodes
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            codes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            codes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            codes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            codes.MAX_FRAME_SIZE: MAX_FRAME,
            codes.ENABLE_CONNECT_PROTOCOL: 1,  # WebSockets over HTTP/2 (RFC 8441)
        })
        # (Initial values take effect at once in h2, but these two copies are only updated
        # when a settings change is acknowledged, so they are set here.)
        self.conn.decoder.max_header_list_size = MAX_HEADER_LIST
        self.conn.max_inbound_frame_size = MAX_FRAME
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.send_now()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.proxy.clients.discard(self)
        for exchange in list(self.exchanges.values()):
            exchange.abandon()
        self.exchanges.clear()
        if self.admitted is not None:
            self.proxy.limits.release(self.admitted)
            self.admitted = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        with self.pool.batch:
            self._received(data)

    def _received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("HTTP/2 protocol error from %s: %s", self.client_ip, exc)
            self._refuse(exc)
            return
        try:
            for event in events:
                self._event(event)
        except Malformed as exc:
            log.debug("malformed HTTP/2 request from %s: %s", self.client_ip, exc.reason)
            self.close(ErrorCodes.PROTOCOL_ERROR, linger=True)
            return
        except Exception:
            log.exception("HTTP/2 connection from %s failed", self.client_ip)
            self.close(ErrorCodes.INTERNAL_ERROR)
            return
        self.send_now()
        if self.transport is not None and not self.closing \
                and self.transport.get_write_buffer_size() > MAX_UNSENT:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.out_paused = True
        for exchange in self.exchanges.values():
            exchange.update_reading()

    def resume_writing(self) -> None:
        self.out_paused = False
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        for exchange in list(self.exchanges.values()):
            exchange.update_reading()

    # -- events ---------------------------------------------------------------------------

    def _event(self, event: h2.events.Event) -> None:
        exchange: Exchange | None
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            self.proxy.requests += 1
            self.idle_since = None
            new = Exchange(self, event.stream_id)
            self.exchanges[event.stream_id] = new
            new.start(event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            exchange = self.exchanges.get(event.stream_id)
            size = event.flow_controlled_length or 0
            if exchange is None:
                self.acknowledge(event.stream_id, size)
            else:
                exchange.from_client(event.data or b"", size)
        elif isinstance(event, h2.events.TrailersReceived):  # (checked, not passed on)
            trailers(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            exchange = self.exchanges.get(event.stream_id)
            if exchange is not None:
                exchange.client_done()
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            exchange = self.exchanges.get(event.stream_id)
            if exchange is not None:
                exchange.abandon()
            if event.remote_reset and self._reset_counted(time.monotonic()):
                self.close(ErrorCodes.ENHANCE_YOUR_CALM)
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                exchange = self.exchanges.get(event.stream_id)
                if exchange is not None:
                    exchange.flush()
            else:
                self._flush_all()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._flush_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()

    def _reset_counted(self, now: float) -> bool:
        """Count a stream the client cancelled; whether it cancels too many too fast (a
        browser cancels some when a page is left mid-load, a flood cancels without end)."""
        if now - self._resets_since > RESET_WINDOW:
            self._resets_since, self.resets = now, 0
        self.resets += 1
        return self.resets > MAX_RESETS

    def _flush_all(self) -> None:
        for exchange in list(self.exchanges.values()):
            exchange.flush()

    # -- for exchanges --------------------------------------------------------------------

    def acknowledge(self, stream_id: int, size: int) -> None:
        if size and not self.closing:
            try:
                self.conn.acknowledge_received_data(size, stream_id)
            except h2.exceptions.ProtocolError:
                pass
            self.flush()

    def take_slot(self) -> bool:
        """Count one more task connection held for this client. The first is covered by
        the client's own connection (the descriptor budget counts two per connection, as on
        HTTP/1.1); each further one takes a place in the proxy's limits under the client's
        name, so that 100 streams on one connection count like 100 connections."""
        if self.slots and (self.admitted is None
                           or not self.proxy.limits.admit(self.admitted)):
            return False
        self.slots += 1
        return True

    def give_slot(self) -> None:
        if self.slots > 1 and self.admitted is not None:
            self.proxy.limits.release(self.admitted)
        self.slots = max(self.slots - 1, 0)

    def finished(self, exchange: Exchange) -> None:
        if exchange.slot:
            exchange.slot = False
            self.give_slot()
        if self.exchanges.get(exchange.stream_id) is exchange:
            del self.exchanges[exchange.stream_id]
        self.conn.forget_closed(exchange.stream_id)
        if not self.exchanges:
            self.idle_since = time.monotonic()

    def flush(self) -> None:
        """Send what h2 has queued, soon: what several task connections answer in one turn
        of the event loop goes out in one write (fewer TLS records and system calls;
        ``turnbatch``)."""
        if not self._flush_soon:
            self._flush_soon = True
            self.pool.batch.later(self.send_now)

    def send_now(self) -> None:
        """Send what h2 has queued."""
        self._flush_soon = False
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- closing --------------------------------------------------------------------------

    def _refuse(self, exc: h2.exceptions.ProtocolError) -> None:
        code = getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)
        self.close(code, linger=True)

    def close(self, code: int = ErrorCodes.NO_ERROR, linger: bool = False) -> None:
        """Send GOAWAY, then close once it is flushed."""
        if self.closing:
            return
        try:
            self.conn.close_connection(error_code=code)
        except h2.exceptions.ProtocolError:
            pass
        self.send_now()
        self.closing = True
        for exchange in list(self.exchanges.values()):
            exchange.abandon()
        if self.transport is None:
            return
        if linger and isinstance(self.transport, TlsTransport):
            self.transport.close_lingering(LINGER)
        else:
            self.transport.close()
