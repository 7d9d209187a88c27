"""Giving memory back after a burst: a large request (or a flood of them) leaves the heap
grown, and CPython's allocator and glibc's keep freed memory for reuse, so the daemon's RSS
would stay at its peak. After a burst, once things are quiet for a moment, collect garbage and
ask glibc to return free pages (``malloc_trim``); elsewhere only the collection runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable

QUIET_SECONDS = 1.0
LARGE_MESSAGE = 64 * 1024  # bytes: a request this big is worth a trim afterwards


def _trimmer() -> Callable[[], None] | None:
    import ctypes  # only after a burst: never on the daemon's way to its first answer
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return None
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int


        def run() -> None:
            trim(0)

        return run
    return None


class Trimmer:
    """``note(size)`` after each request; a trim follows a quiet second after a large one."""

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None
        self._trim: Callable[[], None] | bool | None = False  # False: not looked up yet
        self.trims = 0

    def note(self, size: int) -> None:
        if size < LARGE_MESSAGE:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = asyncio.get_running_loop().call_later(QUIET_SECONDS, self.release)

    def release(self) -> None:
        self._handle = None
        gc.collect()
        if self._trim is False:
            self._trim = _trimmer()
        if callable(self._trim):
            self._trim()
        self.trims += 1
