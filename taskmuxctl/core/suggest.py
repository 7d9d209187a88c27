""""Did you mean …?": the closest of a few known words to a misspelt one (difflib).

Imported only on an error path: difflib is not part of the client's start-up.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The known word most like ``word``, when one is close enough to be a likely typo."""
    import difflib

    found = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    # A word cut short (`stat`) means the one it begins (`status`), not a nearer anagram.
    return next((c for c in found if c.startswith(word)), found[0] if found else None)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'status'?"``, or ``""`` when nothing is close."""
    best = closest(word, choices)
    return f"; did you mean {best!r}?" if best else ""
