"""The update decision: a pure function of what is installed, what is offered, and the flags.

No I/O here: ``apply`` fetches the manifest and reads the state, asks ``decide`` what to do,
and carries it out. The rules:

- ``--to V`` installs exactly V (even older, even one marked bad: the user asked by name).
- Nothing installed yet: install what is offered (the first install).
- Auto-update (the daemon's loop, ``--auto``) never downgrades, skips a version marked bad
  until a newer one appears, and leaves a machine pinned by ``update --rollback`` alone.
- An explicit ``update`` refuses a downgrade or a version marked bad (``--to`` overrides),
  and clears a rollback pin.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from taskmuxctl.update.release import version_key

INSTALL = "install"
NONE = "none"
REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    action: str  # INSTALL | NONE | REFUSE
    version: str  # the offered version
    reason: str  # one line a person can act on
    unpin: bool = False  # an explicit update ends a rollback pin

    @property
    def install(self) -> bool:
        return self.action == INSTALL


def compare(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    return (ka > kb) - (ka < kb)


def decide(current: str | None, offered: str, *, bad: Collection[str] = (),
           pinned: str | None = None, to: str | None = None, auto: bool = False) -> Decision:
    if to is not None:
        if compare(offered, to) != 0:
            return Decision(REFUSE, offered, f"the channel offers {offered}, not {to}: point "
                            "--channel at the release.json of that version")
        if current is not None and compare(current, to) == 0:
            return Decision(NONE, offered, f"{to} is already installed", unpin=True)
        notes = []
        if current is not None and compare(to, current) < 0:
            notes.append("a downgrade")
        if to in bad:
            notes.append("marked bad on this machine")
        extra = f" ({', '.join(notes)}, as asked with --to)" if notes else ""
        return Decision(INSTALL, offered, f"installing {to}{extra}", unpin=True)
    if current is None:
        return Decision(INSTALL, offered, f"installing {offered}")
    order = compare(offered, current)
    if auto:
        if pinned is not None:
            return Decision(NONE, offered, f"pinned to {pinned} by `update --rollback`; "
                            "`taskmuxctl update` follows releases again")
        if order == 0:
            return Decision(NONE, offered, f"{current} is the latest release")
        if order < 0:
            return Decision(NONE, offered, f"the channel offers {offered}, older than "
                            f"{current}: auto-update never downgrades")
        if offered in bad:
            return Decision(NONE, offered, f"{offered} was rolled back on this machine; "
                            "waiting for a newer release")
        return Decision(INSTALL, offered, f"updating {current} -> {offered}")
    if order == 0:
        return Decision(NONE, offered, f"{current} is the latest release", unpin=True)
    if order < 0:
        return Decision(REFUSE, offered, f"the channel offers {offered}, older than the "
                        f"installed {current}: refusing to downgrade; `taskmuxctl update "
                        f"--to {offered}` installs it anyway")
    if offered in bad:
        return Decision(REFUSE, offered, f"{offered} was rolled back on this machine as bad; "
                        f"`taskmuxctl update --to {offered}` tries it again")
    return Decision(INSTALL, offered, f"updating {current} -> {offered}", unpin=True)
