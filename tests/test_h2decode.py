"""The proxy's HPACK decoder (``h2decode``) against hpack's own, block for block: the same
fields, the same dynamic table after each block, and the same verdict on broken blocks
(truncated, bytes changed, bad indexes, oversized integers, misplaced or excessive table size
updates, header lists over the limit)."""

from __future__ import annotations

import copy
import random

import hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKError, OversizedHeaderListError

from taskmuxd.proxy.h2decode import LeanDecoder

NAMES = [b":method", b":path", b":authority", b":scheme", b"accept", b"user-agent", b"cookie",
         b"referer", b"sec-fetch-mode", b"x-custom", b"x-" + b"n" * 200, b"accept-encoding"]
VALUES = [b"GET", b"POST", b"/", b"/src/m1.js", b"https", b"*/*", b"", b"gzip, deflate",
          b"a" * 130, b"\xff\x00binary", b"web.shop.localhost:8443", b"v" * 5000]


def _blocks(seed: int, count: int = 40) -> list[bytes]:
    """Header blocks a browser-like encoder would send, with table size changes between."""
    rng = random.Random(seed)
    encoder = hpack.Encoder()
    blocks = []
    for i in range(count):
        if i % 9 == 8:
            encoder.header_table_size = rng.choice([0, 256, 1024, 4096])
        fields = []
        for _ in range(rng.randint(1, 14)):
            name, value = rng.choice(NAMES), rng.choice(VALUES)
            if rng.random() < 0.15:
                fields.append(NeverIndexedHeaderTuple(name, value))
            else:
                fields.append(HeaderTuple(name, value))
        blocks.append(encoder.encode(fields, huffman=rng.random() < 0.7))
    return blocks


def _outcome(decoder: hpack.Decoder, block: bytes) -> object:
    try:
        return [(bytes(n), bytes(v)) for n, v in decoder.decode(block, raw=True)]
    except OversizedHeaderListError:
        return "oversized"
    except (HPACKError, IndexError, TypeError, UnicodeDecodeError):
        return "error"


def _table(decoder: hpack.Decoder) -> object:
    t = decoder.header_table
    return list(t.dynamic_entries), t.maxsize, t._current_size


def _pair(limit: int = 64 * 1024) -> tuple[hpack.Decoder, LeanDecoder]:
    theirs, ours = hpack.Decoder(), LeanDecoder()
    theirs.max_header_list_size = ours.max_header_list_size = limit
    return theirs, ours


@pytest.mark.parametrize("seed", range(8))
def test_valid_blocks_decode_the_same(seed: int) -> None:
    theirs, ours = _pair()
    for block in _blocks(seed):
        expected = _outcome(theirs, block)
        assert isinstance(expected, list)
        assert _outcome(ours, block) == expected
        assert _table(ours) == _table(theirs)


@pytest.mark.parametrize("seed", range(6))
def test_broken_blocks_get_the_same_verdict(seed: int) -> None:
    rng = random.Random(1000 + seed)
    blocks = _blocks(seed, 12)
    theirs, ours = _pair(limit=8 * 1024)
    verdicts: set[str] = set()
    for block in blocks:
        for _ in range(15):
            if rng.random() < 0.4:
                broken = block[:rng.randrange(len(block))]
            else:
                data = bytearray(block)
                for _ in range(rng.randint(1, 3)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                broken = bytes(data)
            a, b = copy.deepcopy(theirs), copy.deepcopy(ours)
            verdict = _outcome(a, broken)
            assert _outcome(b, broken) == verdict, broken
            assert _table(b) == _table(a)
            verdicts.add(verdict if isinstance(verdict, str) else "decoded")
        _outcome(theirs, block)
        _outcome(ours, block)
    assert verdicts >= {"error", "decoded"}


@pytest.mark.parametrize("block", [
    b"\x80",  # index 0
    b"\xff\xff\xff\xff\xff\xff\x01",  # an index of more than five octets
    b"\xff\x80",  # a truncated integer
    b"\xbf",  # an index past the tables
    b"\x82\x3f\xe1\x1f",  # a table size update after a field
    b"\x3f\xe1\xff\x03",  # a table size above the allowed
    b"\x20\x82",  # a table size update of 0, then a field
    b"\x40\x05abc",  # a truncated name
    b"\x40\x01a\x85\xff",  # a truncated Huffman value
    b"\x40\x01a\x81\xff",  # a Huffman value that is all padding (EOS)
    b"\x10\x01a\x01b",  # never indexed, literal name
    b"\x0f\x2f\x01b",  # not indexed, a name index of two octets
])
def test_hand_made_blocks_get_the_same_verdict(block: bytes) -> None:
    theirs, ours = _pair()
    assert _outcome(ours, block) == _outcome(theirs, block)
    assert _table(ours) == _table(theirs)


def test_a_header_list_over_the_limit_is_refused() -> None:
    theirs, ours = _pair(limit=100)
    block = hpack.Encoder().encode([(b"x-a", b"v" * 80)])
    assert _outcome(ours, block) == _outcome(theirs, block) == "oversized"


def test_a_table_left_above_a_lowered_maximum_is_refused_as_by_hpack() -> None:
    """Once the allowed table size is lowered (our SETTINGS acknowledged), a block that
    does not shrink the table to it is an error for both decoders; one that does is not."""
    theirs, ours = _pair()
    for decoder in (theirs, ours):
        decoder.max_allowed_table_size = 100
    assert _outcome(ours, b"\x82") == _outcome(theirs, b"\x82")
    assert _outcome(ours, b"\x82") == "error"
    assert _outcome(ours, b"\x3f\x45\x82") == _outcome(theirs, b"\x3f\x45\x82")  # (to 100)
    assert _outcome(ours, b"\x82") == _outcome(theirs, b"\x82") == [(b":method", b"GET")]
