"""A cheap HPACK encoder for the proxy's HTTP/2 responses.

hpack's own encoder adds nearly every field to the dynamic table, searches that table
linearly for each field it encodes, and Huffman-codes each value byte by byte in Python:
for a page of hundreds of small responses that was the largest single cost of the HTTP/2
path. Between a browser and a proxy on the same machine the bytes that compression saves
are worth far less than the processor time it takes, so this encoder never indexes: a field
in the static table is one index, any other field is a literal "without indexing" (its name
indexed when the static table has it), with no Huffman coding. The result of each field is
remembered (the encoding depends on the field alone), so the fields every response repeats
cost one dictionary look-up.

The decoder on the other side keeps an empty dynamic table; a size change it announces is
still acknowledged at the start of the next header block, as RFC 7541 section 4.2 asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hpack
from hpack.table import HeaderTable

_STATIC: dict[bytes, tuple[int, dict[bytes, int]]] = HeaderTable.STATIC_TABLE_MAPPING
MAX_REMEMBERED = 1024  # distinct fields whose encoding is kept (then it starts over)


def integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with ``first`` or-ed into its first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(name: bytes, value: bytes) -> bytes:
    """One header field, never added to the dynamic table."""
    found = _STATIC.get(name)
    if found is not None:
        index = found[1].get(value)
        if index is not None:
            return integer(index, 7, 0x80)  # indexed (static table)
        head = integer(found[0], 4, 0x00)  # literal without indexing, indexed name
    else:
        head = b"\x00" + integer(len(name), 7, 0x00) + name  # literal, new name
    return head + integer(len(value), 7, 0x00) + value


# Fields whose values change from one response to the next: encoded each time from their
# name's encoding (remembered), never remembered whole, so that they do not crowd out the
# fields that repeat.
_VARYING = frozenset({b"content-length", b"date", b"etag", b"last-modified", b"expires",
                      b"age", b"set-cookie", b"location", b"content-range"})


def _name_head(name: bytes) -> bytes:
    """The start of a literal field "without indexing" named ``name``, up to its value."""
    found = _STATIC.get(name)
    if found is not None:
        return integer(found[0], 4, 0x00)
    return b"\x00" + integer(len(name), 7, 0x00) + name


class PlainEncoder(hpack.Encoder):
    def __init__(self) -> None:
        super().__init__()
        self._known: dict[tuple[bytes, bytes], bytes] = {}
        self._names: dict[bytes, bytes] = {}  # _name_head of each varying field's name

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        block: list[bytes] = []
        if self.header_table.resized:  # the peer changed SETTINGS_HEADER_TABLE_SIZE
            block.append(self._encode_table_size_change())
            self.header_table.resized = False
        known = self._known
        for header in headers:
            try:  # (a pair of bytes seen before: the field itself is the key)
                encoded = known.get(header)
            except TypeError:  # (not hashable: a list, say)
                encoded = None
            block.append(self._field(header) if encoded is None else encoded)
        return b"".join(block)

    def _field(self, header: Any) -> bytes:
        """``header`` encoded, remembered unless its value varies (``_VARYING``)."""
        name: bytes | str = header[0]
        value: bytes | str = header[1]
        if isinstance(name, str):
            name = name.encode("utf-8")
        if isinstance(value, str):
            value = value.encode("utf-8")
        key = (name, value)
        known = self._known
        encoded = known.get(key)
        if encoded is not None:
            return encoded
        if name in _VARYING:
            head = self._names.get(name)
            if head is None:
                head = self._names[name] = _name_head(name)
            size = len(value)
            return head + (bytes((size,)) if size < 127 else integer(size, 7, 0x00)) + value
        encoded = field(name, value)
        if len(known) >= MAX_REMEMBERED:
            known.clear()
        known[key] = encoded
        return encoded
