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


_AUTHORITY = b"web.shop.localhost:8443"


def _browser_blocks(seed: int, count: int = 80) -> list[tuple[bytes, bytes]]:
    """Header blocks as Chromium sends a page's module requests: the pseudo-headers, the
    :path as a literal left out of the table, then the same fields (indexes into the table,
    once added); now and then a field changes (added to the table) or the table's size.
    Each block with its run of fields after the :path."""
    rng = random.Random(seed)
    encoder = hpack.Encoder()
    common = [(b"origin", b"https://" + _AUTHORITY), (b"user-agent", b"Mozilla/5.0 " * 8),
              (b"accept", b"*/*"), (b"sec-fetch-dest", b"script"),
              (b"referer", b"https://" + _AUTHORITY + b"/src/main.js"), (b"priority", b"u=1")]
    blocks = []
    for i in range(count):
        if i % 25 == 24:
            encoder.header_table_size = rng.choice([2048, 4096])
        if rng.random() < 0.05 or i == count - 2:
            at = rng.randrange(len(common))
            common[at] = (common[at][0], b"changed %d" % i)
        path = b"/src/m%d.js" % i
        head = encoder.encode([(b":method", b"GET"), (b":authority", _AUTHORITY),
                               (b":scheme", b"https")])
        run = encoder.encode(common)
        blocks.append((head + b"\x04" + bytes([len(path)]) + path + run, run))
    return blocks


@pytest.mark.parametrize("seed", range(4))
def test_a_browsers_repeated_fields_decode_the_same_from_remembered_runs(seed: int) -> None:
    theirs, ours = _pair()
    hits = 0
    for block, run in _browser_blocks(seed):
        hits += run in ours._runs
        expected = _outcome(theirs, block)
        assert isinstance(expected, list)
        assert _outcome(ours, block) == expected
        assert _table(ours) == _table(theirs)
    assert hits > 50  # (most blocks' runs were remembered and used)
    # A remembered run over the limit is refused as hpack refuses it, and a whole block of
    # indexes (no literal at all) is remembered and refused the same way.
    block, run = _browser_blocks(seed)[-1]
    indexes = b"\x82\x87\x84"
    for decoder in (theirs, ours):
        decoder.decode(block, raw=True)
        decoder.decode(indexes, raw=True)
    assert run in ours._runs and indexes in ours._runs
    def size(fields: object) -> int:
        assert isinstance(fields, list)
        return sum(len(n) + len(v) + 32 for n, v in fields)

    whole, first = size(_outcome(theirs, block)), size(_outcome(theirs, block)[:4])
    for limit in (whole, whole - 1, first + 1, size(_outcome(theirs, indexes)) - 1):
        theirs.max_header_list_size = ours.max_header_list_size = limit
        for each in (block, indexes):
            assert run in ours._runs and indexes in ours._runs  # (each decoded from them)
            assert _outcome(ours, each) == _outcome(theirs, each), limit
    assert _outcome(ours, block) == _outcome(ours, indexes) == "oversized"


def test_remembered_runs_are_bounded_and_dropped_when_the_table_changes() -> None:
    ours = LeanDecoder()
    encoder = hpack.Encoder()
    encoder.encode([(b"x-a", b"1"), (b"x-b", b"2")])  # (in the table now)
    ours.decode(hpack.Encoder().encode([(b"x-a", b"1"), (b"x-b", b"2")]), raw=True)
    for i in range(100):
        path = b"/%d" % i
        ours.decode(b"\x04" + bytes([len(path)]) + path + bytes([0x82 + i % 30]) * 3,
                    raw=True)
    assert 0 < len(ours._runs) <= 32
    ours.decode(hpack.Encoder().encode([(b"x-new", b"3")]), raw=True)  # (added to the table)
    assert not ours._runs
    ours.decode(b"\x82\x84", raw=True)
    assert ours._runs
    ours.header_table_size = 100
    assert not ours._runs
