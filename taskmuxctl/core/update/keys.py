"""Which Ed25519 keys may sign a release.

``PINNED_KEYS`` ships inside taskmuxctl: the project's release key(s), as base64 of the raw
32-byte public key. ``packaging/release.py keygen`` makes a key pair and prints the line to
put here; the private half lives only in the repository secret the release workflow reads.
Forks and private mirrors add their own keys with the ``trusted_keys`` setting.
"""

from __future__ import annotations

from taskmuxctl.core.update.release import decode_key

# A placeholder until the maintainers run `packaging/release.py keygen --pin`: its private half
# was thrown away when it was made, so nothing verifies against it and no update can be
# installed without a key in `trusted_keys`. Replace it before the first release.
PINNED_KEYS: tuple[str, ...] = (
    "+vY1WFt4/9Bu10v/Em0yla7ADVNlzVHMbxbnH+xd5D4=",
)


def trusted_keys(extra: list[str] | tuple[str, ...] = ()) -> list[bytes]:
    """The pinned keys followed by ``extra`` (the ``trusted_keys`` setting), decoded.
    Raises ValueError naming a key that is not a base64 Ed25519 public key."""
    out: list[bytes] = []
    for text in (*PINNED_KEYS, *extra):
        raw = decode_key(text)
        if raw not in out:
            out.append(raw)
    return out
