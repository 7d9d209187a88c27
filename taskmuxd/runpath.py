"""The few path helpers the runner needs, on ``posix`` alone: the runner never imports ``os``.

``import os`` runs ``os``, ``stat``, ``posixpath`` and ``_collections_abc`` (its ABCs, for
``os.environ``): about 1 ms of CPU, paid by each of a hundred runners a cold start of 100
tasks launches. Every call the runner makes is in ``posix`` (the C module ``os`` wraps, built
into the interpreter and loaded before any code runs), except ``os.path`` and ``os.makedirs``:
those are here. The runner's modules import ``posix as os``, so mypy flags any use of what
``posix`` lacks; tests/test_runner_imports.py keeps ``os`` out of the runner's start-up.

Standard library only and cheap to import: every runner imports it.
"""

from __future__ import annotations

import posix


def join(head: str, *tail: str) -> str:
    """``os.path.join`` for str paths."""
    path = head
    for part in tail:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def dirname(path: str) -> str:
    """``os.path.dirname``."""
    head = path[:path.rfind("/") + 1]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head


def exists(path: str) -> bool:
    """``os.path.exists``: whether ``path`` names something (a dangling link does not)."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def makedirs(path: str, mode: int = 0o777) -> None:
    """``os.makedirs(path, mode, exist_ok=True)``."""
    parent = dirname(path)
    if parent and parent != path and not exists(parent):
        makedirs(parent, mode)
    try:
        posix.mkdir(path, mode)
    except FileExistsError:
        if not _is_dir(path):
            raise
    except OSError:  # as os.makedirs: a race, or a read-only parent with the folder there
        if not _is_dir(path):
            raise


def _is_dir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except OSError:
        return False
