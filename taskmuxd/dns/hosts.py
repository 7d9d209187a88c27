"""The managed block in the hosts file (``/etc/hosts``).

Only the lines between ``# BEGIN taskmux managed`` and ``# END taskmux managed`` are ever
changed; the user's lines stay exactly as they were. The file is replaced atomically (a
temporary file in the same folder, then rename) keeping its mode and owner; where the file is
a bind mount (containers), which cannot be renamed over, it is rewritten in place.
"""

from __future__ import annotations

import errno
import os

from taskmuxctl.fsutil import atomic_write

BEGIN = "# BEGIN taskmux managed"
END = "# END taskmux managed"
NOTE = "# Written by taskmux for task URLs; edit outside this block."


def render_block(names: list[str]) -> list[str]:
    if not names:
        return []
    lines = [BEGIN, NOTE]
    lines += [f"127.0.0.1\t{name}" for name in names]
    lines += [f"::1\t{name}" for name in names]
    lines.append(END)
    return lines


def block_names(text: str) -> list[str]:
    """The names the managed block of ``text`` maps (empty when there is no block)."""
    names: list[str] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            inside = True
        elif stripped == END:
            inside = False
        elif inside and stripped and not stripped.startswith("#"):
            for name in stripped.split()[1:]:
                if name not in names:
                    names.append(name)
    return names


def replace_block(text: str, names: list[str]) -> str:
    """``text`` with its managed block holding ``names`` (removed when there are none).

    The block stays where it was; a new one goes at the end. A BEGIN without an END (a
    hand-edited file) keeps every line after it, rather than swallowing the user's entries.
    """
    lines = text.splitlines()
    out: list[str] = []
    at: int | None = None
    i = 0
    while i < len(lines):
        if lines[i].strip() == BEGIN:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == END), None)
            if end is not None:
                if at is None:
                    at = len(out)
                i = end + 1
                continue
        out.append(lines[i])
        i += 1
    if at is None:
        at = len(out)
    out[at:at] = render_block(names)
    return "\n".join(out) + "\n" if out else ""


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def write(path: str, names: list[str]) -> bool:
    """Make the block of ``path`` hold ``names``; True when the file changed."""
    old = read(path)
    new = replace_block(old, names)
    if new == old:
        return False
    try:
        st = os.stat(path)
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = 0o644, None
    try:
        atomic_write(path, new, mode=mode)
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        with open(path, "w", encoding="utf-8") as fh:  # a bind mount: rewrite in place
            fh.write(new)
            fh.flush()
            os.fsync(fh.fileno())
        return True
    if owner is not None and os.geteuid() == 0:
        os.chown(path, *owner)
    return True
