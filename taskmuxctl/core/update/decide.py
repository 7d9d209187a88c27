"""The update decision: a pure function of what is installed, what is offered, and the flags.

No I/O here: ``apply`` fetches the manifest and reads the state, asks ``decide`` what to do,
and carries it out. The rules:

- ``--to V`` installs exactly V (even older, even one marked bad: the user asked by name).
- Nothing installed yet: install what is offered (the first install).
- Auto-update (the daemon's loop, ``--auto``) never downgrades, skips a version marked bad
  until a newer one appears, and leaves a machine pinned by ``update --rollback`` alone.
- An explicit ``update`` refuses a downgrade or a version marked bad (``--to`` overrides),
  and clears a rollback pin.
- The ``wave`` policy (``auto_update = "wave"``): auto-update also waits until the release
  has been out for ``update_wave_delay`` seconds, counted from the ``created`` time in its
  signed manifest, so that machines with different delays take it in waves. A release whose
  time cannot be read is not taken automatically.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from taskmuxctl.core.update.release import version_key

if TYPE_CHECKING:
    from taskmuxctl.core.rpctypes import UpdateAction

INSTALL: Final = "install"
NONE: Final = "none"
REFUSE: Final = "refuse"


@dataclass(frozen=True)
class Decision:
    action: UpdateAction  # INSTALL | NONE | REFUSE
    version: str  # the offered version
    reason: str  # one line a person can act on
    unpin: bool = False  # an explicit update ends a rollback pin

    @property
    def install(self) -> bool:
        return self.action == INSTALL


def compare(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    return (ka > kb) - (ka < kb)


def released_at(created: str) -> float | None:
    """The manifest's ``created`` (``2026-01-02T03:04:05Z``) as a Unix time; None if unreadable."""
    import datetime

    try:
        when = datetime.datetime.strptime(created.strip(), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.UTC).timestamp()


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{seconds:.0f}s"


def wave_wait(created: str, now: float, delay: float) -> float | None:
    """Seconds until a release published at ``created`` may be taken under the wave policy
    (0 when it may be now); None when its time cannot be read."""
    at = released_at(created)
    if at is None:
        return None
    return max(0.0, at + delay - now)


def decide(current: str | None, offered: str, *, bad: Collection[str] = (),
           pinned: str | None = None, to: str | None = None, auto: bool = False,
           wave_delay: float | None = None, created: str = "",
           now: float = 0.0) -> Decision:
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
            return Decision(NONE, offered, f"{offered} is marked bad (rolled back here or by a "
                            "fleet rollout); waiting for a newer release")
        if wave_delay is not None:
            wait = wave_wait(created, now, wave_delay)
            if wait is None:
                return Decision(NONE, offered, f"the wave policy cannot tell when {offered} "
                                f"was released (created {created!r}); not taking it by itself")
            if wait > 0:
                return Decision(NONE, offered, f"{offered} is out since {created}; the wave "
                                f"policy takes it after {_span(wave_delay)} "
                                f"(update_wave_delay), in {_span(wait)}")
        return Decision(INSTALL, offered, f"updating {current} -> {offered}")
    if order == 0:
        return Decision(NONE, offered, f"{current} is the latest release", unpin=True)
    if order < 0:
        return Decision(REFUSE, offered, f"the channel offers {offered}, older than the "
                        f"installed {current}: refusing to downgrade; `taskmuxctl update "
                        f"--to {offered}` installs it anyway")
    if offered in bad:
        return Decision(REFUSE, offered, f"{offered} is marked bad on this machine (rolled back "
                        "here or by a fleet rollout); "
                        f"`taskmuxctl update --to {offered}` tries it again")
    return Decision(INSTALL, offered, f"updating {current} -> {offered}", unpin=True)
