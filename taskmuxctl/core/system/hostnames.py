"""What counts as a host name taskmux may put into a hosts file: checked where it is written.

A name is written as one field of a line of the hosts file, often by root; whatever the name
holds ends up in that file. So each name is checked right before it is written, whoever
produced it: lower-case ASCII labels of letters, digits and hyphens (not at either end), at
most 63 characters a label and 253 a name, ending with ``.{tld}`` (the managed top-level
domain, never the bare TLD itself). Anything else (a newline, a space, a NUL, ``..``,
upper case, non-ASCII, another domain) is refused with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

MAX_NAME = 253
MAX_LABEL = 63
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")

log = logging.getLogger("taskmuxd.dns")


def problem(name: object, tld: str) -> str | None:
    """Why ``name`` is not a host name under ``tld`` that may be written, or None."""
    if not isinstance(name, str):
        return f"not a string ({type(name).__name__})"
    if not name:
        return "empty"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if not name.endswith("." + tld) or problem_tld(tld):
        return f"not under .{tld}"
    for label in name.split("."):
        if not label:
            return "has an empty label (two dots in a row, or a dot at either end)"
        if len(label) > MAX_LABEL:
            return f"has a label longer than {MAX_LABEL} characters"
        if not set(label) <= _LABEL_CHARS:
            return "has characters other than a-z, 0-9, '-' and '.'"
        if label[0] == "-" or label[-1] == "-":
            return "has a label that starts or ends with '-'"
    return None


def problem_tld(tld: str) -> str | None:
    """Why ``tld`` is not a usable managed domain (labels as above, no leading dot)."""
    if not tld or len(tld) > MAX_NAME:
        return "empty or too long"
    for label in tld.split("."):
        if not label or len(label) > MAX_LABEL or not set(label) <= _LABEL_CHARS \
                or label[0] == "-" or label[-1] == "-":
            return f"{tld!r} is not a domain name such as \"localhost\""
    return None


def valid(names: Sequence[object], tld: str, where: str) -> list[str]:
    """The names that may be written under ``tld``, each once, in order; every refused name
    is logged (with ``repr``, so a newline shows as ``\\n``) saying why and where."""
    out: list[str] = []
    for name in names:
        why = problem(name, tld)
        if why is not None:
            log.warning("refused to write the host name %.80r into %s: %s", name, where, why)
            continue
        assert isinstance(name, str)
        if name not in out:
            out.append(name)
    return out
