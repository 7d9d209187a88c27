"""A leaner HPACK decoder for the proxy's HTTP/2 requests (RFC 7541), in place of hpack's.

A browser sends each request's dozen or more fields mostly as indexes into the dynamic
table, so decoding is a loop of small steps; hpack's decoder spends most of its time around
them (a copy of the rest of the block for each literal, a log call and a named tuple for each
field, a second pass to copy every name and value). This one is the same decoder in one
loop over the block: the same header table (hpack's ``HeaderTable``, so table size settings
and updates work as before), the same Huffman decoder, and the same errors for the same
faults (a bad index, a truncated block, an integer over five octets, a table size update
after a field or above the allowed size, a header list over ``max_header_list_size``).
Fields come out as plain ``(name, value)`` byte tuples, which is all h2 and the proxy need
(the "never indexed" mark only matters to whoever encodes the field again; the proxy sends it
on in HTTP/1.1). Huffman-coded strings it has decoded are remembered (bounded), since a
browser sends the same ones on every load of a page. tests/test_h2decode.py holds it to
hpack's decoder.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hpack
from hpack.exceptions import HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

_STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_LENGTH = len(_STATIC)
# By first byte: the static table's field that byte indexes on its own (0x81 to 0xBD), else
# None.
_ONE_BYTE_STATIC: tuple[tuple[bytes, bytes] | None, ...] = tuple(
    _STATIC[b - 0x81] if 0x81 <= b < 0x81 + _STATIC_LENGTH else None for b in range(256))

_MAX_INTEGER_OCTETS = 5  # (as hpack: a prefix and four more octets)
# Huffman-coded strings already decoded, and what they decoded to. A browser sends the same
# literals again on every load of a page (each module's path, its Referer), each time on a
# new connection whose table is empty, and decoding a string a bit at a time in Python cost
# more than the rest of a request's header block. (Bounded: strings of up to
# _MAX_REMEMBERED_LENGTH bytes, _MAX_REMEMBERED of them, then it starts over.)
_HUFFMAN_SEEN: dict[bytes, bytes] = {}
_MAX_REMEMBERED = 4096
_MAX_REMEMBERED_LENGTH = 512


def _integer(data: bytes, pos: int, value: int) -> tuple[int, int]:
    """The rest of an HPACK integer whose prefix was all ones (``value``), from ``pos``."""
    shift = 0
    octets = 1
    while True:
        try:
            byte = data[pos]
        except IndexError:
            raise HPACKDecodingError("truncated integer") from None
        pos += 1
        octets += 1
        if byte < 128:
            return value + (byte << shift), pos
        value += (byte - 128) << shift
        shift += 7
        if octets > _MAX_INTEGER_OCTETS:
            raise HPACKDecodingError("an integer of more than five octets")


def _string(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """A string literal at ``pos``: its bytes (Huffman-decoded if marked) and where it ends."""
    if pos >= end:
        raise HPACKDecodingError("Truncated header block")
    first = data[pos]
    length = first & 0x7F
    pos += 1
    if length == 0x7F:
        length, pos = _integer(data, pos, length)
    stop = pos + length
    if stop > end:
        raise HPACKDecodingError("Truncated header block")
    text = data[pos:stop]
    if first & 0x80:
        plain = _HUFFMAN_SEEN.get(text)
        if plain is None:
            plain = decode_huffman(text)
            if length <= _MAX_REMEMBERED_LENGTH:
                if len(_HUFFMAN_SEEN) >= _MAX_REMEMBERED:
                    _HUFFMAN_SEEN.clear()
                _HUFFMAN_SEEN[text] = plain
        text = plain
    return text, stop


# Runs of indexed fields that end a block, per connection (see ``LeanDecoder``): at most
# _MAX_RUNS of them, each at most _MAX_RUN_BYTES long.
_MAX_RUNS = 32
_MAX_RUN_BYTES = 256


class LeanDecoder(hpack.Decoder):
    """hpack's decoder in one loop (see the module's doc), and one more saving: a browser's
    requests for a page's modules differ in their :path only, which Chromium sends as a
    literal that is not added to the table, followed by the same dozen fields as indexes
    into the dynamic table, byte for byte the same from one request to the next. A run of
    indexed fields that ends a block depends on nothing but its bytes and the dynamic table,
    so while the table is unchanged the same bytes decode to the same fields: such runs (of
    indexes only; any field that adds to the table, or a size update, clears them all) are
    kept with their fields and size, and looked up where a block starts and after each
    literal that leaves the table as it is. The size limit is checked on the whole run at
    once (the size only grows: the same error for the same block)."""

    def __init__(self, max_header_list_size: int = hpack.hpack.DEFAULT_MAX_HEADER_LIST_SIZE
                 ) -> None:
        super().__init__(max_header_list_size)
        self._runs: dict[bytes, tuple[tuple[tuple[bytes, bytes], ...], int]] = {}

    @property
    def header_table_size(self) -> int:
        return self.header_table.maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._runs.clear()
        self.header_table.maxsize = value

    def decode(self, data: bytes | memoryview, raw: bool = False) -> Iterable[Any]:
        if not raw:  # (h2 always asks for bytes; anything else is hpack's business)
            self._runs.clear()
            return super().decode(bytes(data), raw)
        if not isinstance(data, bytes):
            data = bytes(data)
        table = self.header_table
        get = table.get_by_index  # (for what the two tables do not hold: it raises)
        dynamic = table.dynamic_entries
        limit = self.max_header_list_size
        runs = self._runs
        headers: list[tuple[bytes, bytes]] = []
        size = 0
        pos = 0
        end = len(data)
        # Where the run of indexed fields under way began: in the block, in ``headers``, and
        # the size before it.
        run_pos = run_count = run_size = 0
        if runs:
            known = runs.get(data)
            if known is not None:
                headers.extend(known[0])
                size = known[1]
                if size > limit:
                    raise OversizedHeaderListError(
                        f"A header list larger than {limit} has been received")
                pos = run_pos = end
        while pos < end:
            first = data[pos]
            pos += 1
            field = _ONE_BYTE_STATIC[first]
            if field is not None:  # (most of a browser's fields are these, or the next)
                headers.append(field)
                size += len(field[0]) + len(field[1]) + 32
                if size > limit:
                    raise OversizedHeaderListError(
                        f"A header list larger than {limit} has been received")
                continue
            if 0xBE <= first < 0xFF and first - 0xBE < len(dynamic):  # one byte, dynamic
                field = dynamic[first - 0xBE]
                headers.append(field)
                size += len(field[0]) + len(field[1]) + 32
                if size > limit:
                    raise OversizedHeaderListError(
                        f"A header list larger than {limit} has been received")
                continue
            if first & 0x80:  # an indexed field
                index = first & 0x7F
                if index == 0x7F:
                    index, pos = _integer(data, pos, index)
                # (The table's own look-up, inline: most of a request's fields are these.)
                if 0 < index <= _STATIC_LENGTH:
                    field = _STATIC[index - 1]
                elif _STATIC_LENGTH < index <= _STATIC_LENGTH + len(dynamic):
                    field = dynamic[index - _STATIC_LENGTH - 1]
                else:
                    field = get(index)
                headers.append(field)
                size += len(field[0]) + len(field[1]) + 32
                if size > limit:
                    raise OversizedHeaderListError(
                        f"A header list larger than {limit} has been received")
                continue
            if first & 0x40 or not first & 0x20:  # a literal, added to the table or not
                if first & 0x40:
                    index, full = first & 0x3F, 0x3F
                else:
                    index, full = first & 0x0F, 0x0F
                if index == full:
                    index, pos = _integer(data, pos, index)
                if index:
                    name = get(index)[0]
                else:
                    name, pos = _string(data, pos, end)
                value, pos = _string(data, pos, end)
                if first & 0x40:
                    table.add(name, value)
                    runs.clear()
                headers.append((name, value))
                size += len(name) + len(value) + 32
                if size > limit:
                    raise OversizedHeaderListError(
                        f"A header list larger than {limit} has been received")
                if not first & 0x40 and runs:
                    known = runs.get(data[pos:])
                    if known is not None:
                        headers.extend(known[0])
                        size += known[1]
                        if size > limit:
                            raise OversizedHeaderListError(
                                f"A header list larger than {limit} has been received")
                        pos = end
                run_pos, run_count, run_size = pos, len(headers), size
                continue
            else:  # a dynamic table size update
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                new_size = first & 0x1F
                if new_size == 0x1F:
                    new_size, pos = _integer(data, pos, new_size)
                if new_size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.header_table_size = new_size  # (clears the runs)
                run_pos = pos
                continue
        if table.maxsize > self.max_allowed_table_size:  # (hpack's _assert_valid_table_size)
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        if run_pos < end and end - run_pos <= _MAX_RUN_BYTES and run_count < len(headers):
            if len(runs) >= _MAX_RUNS:
                runs.clear()
            runs[data[run_pos:]] = (tuple(headers[run_count:]), size - run_size)
        return headers
