"""A screen clear in a task's output does not become blank lines in its log: Vite (and
tools like it) clear the screen by printing a screenful of newlines, then moving the cursor
home and erasing below it. Blank lines that something visible follows stay."""

from __future__ import annotations

import os

from taskmuxd.runner import AnsiStripper, LogWriter


def logged(chunks: list[bytes], tmp_path: str) -> list[str]:
    path = os.path.join(tmp_path, "task.log")
    writer = LogWriter(path, 1024 * 1024, 2)
    for chunk in chunks:
        writer.feed(chunk, 1_700_000_000.0)
    writer.flush_partial(1_700_000_001.0, force=True)
    with open(path, encoding="utf-8") as fh:
        return [line.split(" ", 1)[1].rstrip("\n") for line in fh]


def test_a_vite_screen_clear_leaves_no_blank_lines(tmp_path: str) -> None:
    rows = 40  # what Vite's clearScreen writes on a 40-row terminal, through a pty (\r\n)
    chunks = [b"\x1b[1m\x1b[32m  VITE\x1b[39m v5.4.0\x1b[22m  ready in 312 ms\r\n\r\n",
              b"  \x1b[32m\xe2\x9e\x9c\x1b[39m  Local:   http://localhost:5173/\r\n",
              b"\r\n" * (rows - 2) + b"\r\n", b"\x1b[1;1H", b"\x1b[0J",
              b"\x1b[2m12:00:01\x1b[22m \x1b[36m[vite]\x1b[39m page reload src/App.tsx\r\n"]
    assert logged(chunks, str(tmp_path)) == [
        "  VITE v5.4.0  ready in 312 ms", "", "  ➜  Local:   http://localhost:5173/",
        "12:00:01 [vite] page reload src/App.tsx"]


def test_other_clears_and_ordinary_blank_lines(tmp_path: str) -> None:
    chunks = [b"one\n\n\ntwo\n", b"\n", b"three\n\n\n\x1b[H\x1b[2J\x1b[3J", b"four\n\n\x1bc",
              b"five\r\n"]
    assert logged(chunks, str(tmp_path)) == ["one", "", "", "two", "", "three", "four",
                                             "five"]


def test_split_sequences_and_plain_text_pass_through() -> None:
    s = AnsiStripper()
    out = s.feed(b"a\n") + s.feed(b"\n\n\x1b[") + s.feed(b"2") + s.feed(b"J") + s.feed(b"b\n")
    assert out == "a\nb\n"
    s = AnsiStripper()
    assert s.feed(b"plain text\n") == "plain text\n"
    assert s.feed(b"more\n") == "more\n"
