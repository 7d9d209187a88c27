"""Sending the system's lookups of ``*.{tld}`` to taskmux's DNS server, and flushing caches.

Linux: a systemd-resolved drop-in (``/etc/systemd/resolved.conf.d/taskmux-{tld}.conf``) with
``DNS=127.0.0.1:{port}`` and the routing-only domain ``~{tld}``; macOS:
``/etc/resolver/{tld}`` with ``nameserver`` and ``port``. Both need root. Every step is
reported as an :class:`Action` (what was done, or why not and what to run instead). ``root``
re-roots the system paths, for tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from taskmuxctl.core.fsutil import atomic_write

MARK = "# Written by taskmux"
COMMAND_TIMEOUT = 30


@dataclass
class Action:
    target: str  # what it is about: "systemd-resolved", "/etc/resolver/localhost", ...
    done: bool
    detail: str  # what happened, or what to do
    needs_root: bool = False
    changed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_root() -> bool:
    return os.geteuid() == 0


def resolver_file(tld: str, root: str = "/", platform: str = sys.platform) -> str:
    if platform == "darwin":
        return os.path.join(root, "etc", "resolver", tld)
    return os.path.join(root, "etc", "systemd", "resolved.conf.d", f"taskmux-{tld}.conf")


def resolver_text(tld: str, port: int, platform: str = sys.platform) -> str:
    if platform == "darwin":
        return (f"{MARK}: send *.{tld} lookups to taskmux's DNS server.\n"
                f"nameserver 127.0.0.1\nport {port}\n")
    return (f"{MARK}: send *.{tld} lookups to taskmux's DNS server.\n"
            f"[Resolve]\nDNS=127.0.0.1:{port}\nDomains=~{tld}\n")


def resolver_present(platform: str = sys.platform, root: str = "/") -> bool:
    """Whether there is a resolver that reads the delegation file (macOS always does)."""
    if platform == "darwin":
        return True
    return os.path.isdir(os.path.join(root, "run", "systemd", "resolve"))


def install(tld: str, port: int, root: str = "/", platform: str = sys.platform,
            reload: bool = True) -> list[Action]:
    path = resolver_file(tld, root, platform)
    text = resolver_text(tld, port, platform)
    try:
        with open(path, encoding="utf-8") as fh:
            current: str | None = fh.read()
    except OSError:
        current = None
    if current == text:
        return [Action(path, True, "already in place")]
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        atomic_write(path, text, mode=0o644)
    except PermissionError:
        return [Action(path, False, "needs root: run `sudo taskmux dns install`",
                       needs_root=True)]
    actions = [Action(path, True, f"wrote {path} (*.{tld} -> 127.0.0.1:{port})",
                      changed=True)]
    if reload and platform != "darwin":
        actions.append(_reload_resolved())
    if platform != "darwin" and tld == "localhost":
        actions.append(Action("note", True, "systemd-resolved answers *.localhost with "
                              "loopback itself, so these names resolve either way"))
    return actions


def uninstall(tld: str, root: str = "/", platform: str = sys.platform,
              reload: bool = True) -> list[Action]:
    path = resolver_file(tld, root, platform)
    if not os.path.exists(path):
        return [Action(path, True, "not installed")]
    try:
        with open(path, encoding="utf-8") as fh:
            if not fh.read().startswith(MARK):
                return [Action(path, False, f"{path} was not written by taskmux; left alone")]
        os.unlink(path)
    except PermissionError:
        return [Action(path, False, "needs root: run `sudo taskmux dns uninstall`",
                       needs_root=True)]
    actions = [Action(path, True, f"removed {path}", changed=True)]
    if reload and platform != "darwin":
        actions.append(_reload_resolved())
    return actions


def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    out = (proc.stderr or proc.stdout).strip()
    return proc.returncode == 0, out


def _reload_resolved() -> Action:
    if shutil.which("systemctl") is None:
        return Action("systemd-resolved", False, "systemctl not found: restart your resolver "
                      "so it reads the new file")
    ok, _ = _run(["systemctl", "is-active", "--quiet", "systemd-resolved"])
    if not ok:
        return Action("systemd-resolved", False, "systemd-resolved is not running: the file "
                      "takes effect when it starts (or point your resolver at 127.0.0.1 "
                      "yourself)")
    ok, out = _run(["systemctl", "try-reload-or-restart", "systemd-resolved"])
    if ok:
        return Action("systemd-resolved", True, "restarted systemd-resolved", changed=True)
    return Action("systemd-resolved", False,
                  f"could not restart systemd-resolved ({out}); run "
                  "`sudo systemctl restart systemd-resolved`", needs_root=not _is_root())


def flush(platform: str = sys.platform) -> list[Action]:
    """Flush the operating system's DNS caches that are present."""
    steps: list[tuple[str, list[str]]] = []
    if platform == "darwin":
        steps = [("dscacheutil", ["dscacheutil", "-flushcache"]),
                 ("mDNSResponder", ["killall", "-HUP", "mDNSResponder"])]
    else:
        if shutil.which("resolvectl"):
            steps.append(("systemd-resolved", ["resolvectl", "flush-caches"]))
        elif shutil.which("systemd-resolve"):
            steps.append(("systemd-resolved", ["systemd-resolve", "--flush-caches"]))
        if shutil.which("nscd"):
            steps.append(("nscd", ["nscd", "-i", "hosts"]))
    if not steps:
        return [Action("dns cache", True, "no system DNS cache found: nothing to flush")]
    actions = []
    for name, argv in steps:
        if shutil.which(argv[0]) is None:
            continue
        ok, out = _run(argv)
        if ok:
            actions.append(Action(name, True, f"flushed ({' '.join(argv)})", changed=True))
        else:
            needs = not _is_root()
            hint = f"; run `sudo {' '.join(argv)}`" if needs else ""
            actions.append(Action(name, False, f"{' '.join(argv)} failed: {out}{hint}",
                                  needs_root=needs))
    return actions
