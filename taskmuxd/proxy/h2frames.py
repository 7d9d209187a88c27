"""The client's HTTP/2 frames read from its bytes, for h2: h2's own frame buffer, cheaper per
frame.

h2's ``FrameBuffer`` parses each frame with hyperframe, which builds the frame through a
chain of constructors (a set of the type's flag names made anew for each frame, its flags
added one by one), copies a body three times, and gives frames a ``repr`` that h2 formats
for its trace log on every frame it receives. A page of hundreds of requests is hundreds
of HEADERS frames, and that was a good part of the proxy's processor time per request.

``Frames`` makes the same frame objects (hyperframe's classes, with a ``repr`` that costs
nothing) with the same fields: a copy of a frame of the type as its constructor leaves it,
its stream and flags set from a table made once per type and flag byte. The body is
parsed by hyperframe's own ``parse_body``, except for a DATA or HEADERS frame without
padding or priority and any CONTINUATION, whose payload is the frame's data as it is, and a
HEADERS frame with priority but no padding (as Chromium sends every request), whose five
octets of priority are read here. The
checks and errors are h2's, in h2's order (a frame's stream against its type as soon as its
header is in, then its length, then its body; CONTINUATION frames as h2 gathers them, at
most ``CONTINUATION_BACKLOG``). tests/test_h2frames.py holds it to h2's own buffer, byte for
byte, on well-formed and hostile input.
"""

from __future__ import annotations

import struct
from typing import Any

import h2.frame_buffer
import hyperframe.frame
from h2.exceptions import FrameDataMissingError, FrameTooLargeError, ProtocolError
from hyperframe.exceptions import InvalidDataError, InvalidFrameError
from hyperframe.flags import Flags
from hyperframe.frame import Frame

_HEAD = struct.Struct(">HBBBL")
_DATA, _HEADERS, _PUSH_PROMISE, _CONTINUATION = 0x0, 0x1, 0x5, 0x9
_END_HEADERS = 0x4
_PADDED, _PRIORITY = 0x08, 0x20
_PADDED_OR_PRIORITY = _PADDED | _PRIORITY
_PRIORITY_FIELDS = struct.Struct(">LB")  # (exclusive bit and stream dependency, weight)


def _quiet(cls: type[Frame]) -> type[Frame]:
    """``cls`` with a ``repr`` that costs nothing (the same layout, so a parsed frame can
    become one)."""
    return type(cls.__name__, (cls,), {"__slots__": (), "__repr__": _short_repr})


def _short_repr(frame: Frame) -> str:
    return f"{type(frame).__name__}(stream_id={frame.stream_id})"


QUIET: dict[type[Frame], type[Frame]] = {cls: _quiet(cls) for cls in
                                         [*hyperframe.frame.FRAMES.values(),
                                          hyperframe.frame.ExtensionFrame]}


class _Kind:
    """What is needed to make frames of one type: its quiet class, the fields its
    constructor sets (for stream 1 when it needs a stream, else 0), its flag names, the
    stream rule, and per flag byte the flag names it sets."""

    __slots__ = ("cls", "fields", "flag_names", "has_stream", "no_stream", "sets")

    def __init__(self, cls: type[Frame]) -> None:
        assoc = cls.stream_association
        self.has_stream = assoc == "has-stream"
        self.no_stream = assoc == "no-stream"
        template = cls(1 if self.has_stream else 0)
        self.fields = {k: v for k, v in vars(template).items() if k != "flags"}
        self.cls = QUIET[cls]
        self.flag_names = {flag.name for flag in cls.defined_flags}
        self.sets = [frozenset(name for name, bit in cls.defined_flags if byte & bit)
                     for byte in range(256)]


_KINDS: dict[int | None, _Kind] = {kind: _Kind(cls) for kind, cls in
                                  hyperframe.frame.FRAMES.items()}


def _invalid_header(kind: _Kind, stream_id: int) -> ProtocolError:
    """The error h2 raises for a frame whose stream does not fit its type."""
    name = kind.cls.__name__
    if kind.has_stream:
        msg = f"Stream ID must be non-zero for {name}"
    else:
        msg = f"Stream ID must be zero for {name} with stream_id={stream_id}"
    return ProtocolError(f"Received frame with invalid header: {msg}")


class Frames(h2.frame_buffer.FrameBuffer):
    def add(self, data: bytes) -> None:
        """``add_data``, the bytes appended as they are once the preface is past."""
        if self._preamble_len:
            self.add_data(data)
        else:
            self._data += data

    def __next__(self) -> Frame:
        frame = self.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    def next_frame(self) -> Frame | None:
        """The next frame, as iterating gives it, or None where iterating would end
        (no exception to raise and catch after each read from the client)."""
        while True:
            data = self._data
            if len(data) < 9:
                return None
            high, low, kind_byte, flag_byte, stream_id = _HEAD.unpack_from(data)
            length = (high << 8) + low
            stream_id &= 0x7FFFFFFF
            kind = _KINDS.get(kind_byte)
            if kind is None:  # (an extension frame: hyperframe's own way)
                frame = self._parsed(length)
                if frame is None:
                    return None
            else:
                if (kind.has_stream and not stream_id) or (kind.no_stream and stream_id):
                    raise _invalid_header(kind, stream_id)
                if len(data) < length + 9:
                    return None
                if length > self.max_frame_size:
                    raise FrameTooLargeError(
                        f"Received overlong frame: length {length}, max {self.max_frame_size}")
                frame = kind.cls.__new__(kind.cls)
                state: dict[str, Any] = frame.__dict__
                state.update(kind.fields)
                state["stream_id"] = stream_id
                flags = Flags.__new__(Flags)
                flags._valid_flags = kind.flag_names
                flags._flags = set(kind.sets[flag_byte])
                state["flags"] = flags
                if kind_byte == _CONTINUATION or (
                        kind_byte <= _HEADERS and not flag_byte & _PADDED_OR_PRIORITY):
                    state["data"] = bytes(data[9:9 + length])
                    state["body_len"] = length
                elif kind_byte == _HEADERS and flag_byte & _PADDED_OR_PRIORITY == _PRIORITY \
                        and length >= 5:  # (as a browser sends each request's HEADERS)
                    depends_on, weight = _PRIORITY_FIELDS.unpack_from(data, 9)
                    state["depends_on"] = depends_on & 0x7FFFFFFF
                    state["stream_weight"] = weight
                    state["exclusive"] = bool(depends_on >> 31)
                    state["data"] = bytes(data[14:9 + length])
                    state["body_len"] = length
                else:
                    if kind_byte == 0x4:  # SETTINGS: its own dict, filled by parse_body
                        state["settings"] = {}
                    try:
                        frame.parse_body(memoryview(data[9:9 + length]))
                    except InvalidDataError as err:
                        raise ProtocolError("Received frame with non-compliant data") from err
                    except InvalidFrameError as err:
                        raise FrameDataMissingError("Frame data missing or invalid") from err
                del data[:9 + length]
                if not self._headers_buffer and (flag_byte & _END_HEADERS or (
                        kind_byte not in (_HEADERS, _PUSH_PROMISE))):
                    return frame  # (not in a header block, nor starting one)
            new = self._update_header_buffer(frame)
            if new is not None:
                return new

    def _parsed(self, length: int) -> Frame | None:
        """The next frame as h2's buffer parses it, or None until all of it is in."""
        if len(self._data) < length + 9:
            return None
        self._validate_frame_length(length)
        frame, _ = Frame.parse_frame_header(memoryview(self._data[:9]))
        try:
            frame.parse_body(memoryview(self._data[9:9 + length]))
        except InvalidDataError as err:
            raise ProtocolError("Received frame with non-compliant data") from err
        except InvalidFrameError as err:
            raise FrameDataMissingError("Frame data missing or invalid") from err
        del self._data[:9 + length]
        frame.__class__ = QUIET.get(frame.__class__, frame.__class__)
        return frame
