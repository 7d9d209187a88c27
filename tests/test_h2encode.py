"""The proxy's HPACK encoder (``h2encode``): what it writes decodes to the same fields."""

from __future__ import annotations

import hpack

from taskmuxd.proxy.h2encode import PlainEncoder, integer


def test_fields_decode_to_what_was_encoded() -> None:
    encoder, decoder = PlainEncoder(), hpack.Decoder()
    fields = [(b":status", b"200"), (b":status", b"418"), (b"content-type", b"text/javascript"),
              (b"cache-control", b"no-cache"), (b"etag", b'W/"7b-1"'),
              (b"x-a-very-long-custom-field-name" * 8, b"v" * 300), (b"set-cookie", b"a=1"),
              (b"set-cookie", b"b=2"), (b"content-length", b"0"), (b"location", b"/x" * 100),
              (b"date", b"Mon, 30 Nov 2026 13:11:41 GMT")]
    for _ in range(3):  # (the second and third time from what it remembered)
        assert decoder.decode(encoder.encode(fields), raw=True) == fields
    assert len(decoder.header_table.dynamic_entries) == 0  # nothing was indexed


def test_a_table_size_change_is_acknowledged_first() -> None:
    encoder, decoder = PlainEncoder(), hpack.Decoder()
    encoder.header_table_size = 0
    block = encoder.encode([(b":status", b"204")])
    assert block[0] & 0xE0 == 0x20  # a dynamic table size update leads the block
    assert decoder.decode(block, raw=True) == [(b":status", b"204")]
    assert encoder.encode([(b":status", b"204")]) == integer(9, 7, 0x80)  # (static index 9)


def test_integers_longer_than_their_prefix() -> None:
    assert integer(10, 5, 0) == bytes([10])
    assert integer(1337, 5, 0) == bytes([31, 154, 10])  # RFC 7541 C.1.2


def test_fields_in_other_shapes_are_encoded_as_their_bytes() -> None:
    """Text, hpack's HeaderTuple and lists encode as the same fields in bytes would (the
    remembered encodings are looked up by the field itself only for pairs of bytes)."""
    from hpack import HeaderTuple, NeverIndexedHeaderTuple

    encoder, decoder = PlainEncoder(), hpack.Decoder()
    as_bytes = [(b"content-type", b"text/css"), (b"x-t\xc3\xa9", b"caf\xc3\xa9"),
                (b"etag", b'"1"'), (b":status", b"200")]
    shapes: list[list[object]] = [
        [(n.decode(), v.decode()) for n, v in as_bytes],
        [HeaderTuple(n, v) for n, v in as_bytes],
        [NeverIndexedHeaderTuple(n, v) for n, v in as_bytes],
        [[n, v] for n, v in as_bytes],
        as_bytes,
    ]
    expected = PlainEncoder().encode(as_bytes)
    for _ in range(2):
        for fields in shapes:
            block = encoder.encode(fields)
            assert block == expected
            assert decoder.decode(block, raw=True) == as_bytes
