"""The NDJSON framer and the client's JSON codec, without any I/O."""

from __future__ import annotations

import json
import math

import pytest

from taskmuxctl.core import jsonio
from taskmuxctl.core.protocol import ERRORS, Code, FrameTooLarge, LineFramer, encode


def test_framer_splits_lines_across_arbitrary_chunks() -> None:
    stream = b'{"a":1}\n{"b":2}\r\n\n{"c":3}\n'
    for size in range(1, len(stream) + 1):
        framer = LineFramer()
        lines: list[bytes] = []
        for i in range(0, len(stream), size):
            lines += framer.feed(stream[i:i + size])
        assert lines == [b'{"a":1}', b'{"b":2}', b'{"c":3}'], size
        assert framer.pending == 0


def test_framer_holds_an_unfinished_line() -> None:
    framer = LineFramer()
    assert framer.feed(b'{"a":') == []
    assert framer.pending == 5
    assert framer.feed(b"1}\n") == [b'{"a":1}']


def test_framer_refuses_a_line_over_the_limit_even_without_newline() -> None:
    framer = LineFramer(limit=10)
    assert framer.feed(b"0123456789") == []
    with pytest.raises(FrameTooLarge):
        framer.feed(b"x")
    framer = LineFramer(limit=10)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"0123456789abc\nok\n")


@pytest.mark.parametrize("value", [
    None, True, False, 0, -17, 2**70, 1.5, -0.25, 1e300, "", "plain", "quote\" and \\ slash",
    "tab\tnew\nline\u0001", "ünïcödé ✓ 🚀", [], {}, [1, [2, [3, {"x": None}]]],
    {"nested": {"list": [1, "two", 3.0, False]}, "empty": ""},
])
def test_jsonio_round_trips_like_json(value: object) -> None:
    text = jsonio.dumps(value)
    assert json.loads(text) == value
    assert jsonio.loads(text) == value
    assert jsonio.loads(json.dumps(value, indent=2)) == value
    assert text.isascii()


@pytest.mark.parametrize("bad", ["", "   ", "{", '{"a":1} x', "[1,]", "NaN", "Infinity",
                                 "{'a': 1}", b"\xff\xfe"])
def test_jsonio_rejects_what_is_not_one_json_document(bad: str | bytes) -> None:
    with pytest.raises(jsonio.JSONError):
        jsonio.loads(bad)


def test_jsonio_refuses_nan_and_unknown_types() -> None:
    with pytest.raises(ValueError, match=r"(?i)out of range|nan"):
        jsonio.dumps(math.nan)
    with pytest.raises(TypeError):
        jsonio.dumps({"s": {1, 2}})


def test_encode_is_one_line() -> None:
    line = encode({"text": "a\nb"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1


def test_every_code_is_described_and_says_whose_fault() -> None:
    codes = [v for k, v in vars(Code).items() if k.isupper()]
    assert len(codes) == len(set(codes)), "two names share a code"
    for code in codes:
        assert code in ERRORS, code
        assert ERRORS[code].fault in ("client", "task", "daemon")
