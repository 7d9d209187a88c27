"""An update from start to finish, and ``--rollback``.

check (fetch + verify the manifest, ``decide``) -> download to a temporary file (size cap,
deadline) -> size and sha256 -> install into ``versions/{version}`` -> preflight -> arm the
boot-guard and switch ``current`` (the old one becomes ``previous``) -> bounce the daemon ->
wait until it answers as the new version -> install the new boot-guard, prune.

Before the switch a failure leaves everything as it was (the half-built version is removed).
After it, a daemon that does not come up as the new version is rolled back here (or already
by the boot-guard, under a service manager) and the version is recorded as bad.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from taskmuxctl import __version__
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import CommandError
from taskmuxctl.core.update import DEFAULT_RELEASE_URL, bootguard, install, restart
from taskmuxctl.core.update.decide import INSTALL, NONE, REFUSE, Decision, decide
from taskmuxctl.core.update.layout import AppLayout
from taskmuxctl.core.update.lock import UpdateBusy, UpdateLock
from taskmuxctl.core.update.progress import emit
from taskmuxctl.core.update.release import (
    Manifest,
    Progress,
    ReleaseError,
    download,
    fetch_manifest,
    python_satisfies,
)

if TYPE_CHECKING:
    from taskmuxctl.core.rpctypes import UpdateCheck

LATEST = "/releases/latest/download/"
EXIT_UPDATE_AVAILABLE = 10
__all__ = ["DEFAULT_RELEASE_URL", "Options", "UpdateError", "channel_for", "check", "mark_bad",
           "rollback", "update"]

_RELEASE_CODES = {"fetch": Code.UPDATE_DOWNLOAD_FAILED, "timeout": Code.UPDATE_DOWNLOAD_FAILED,
                  "truncated": Code.UPDATE_DOWNLOAD_FAILED}


class UpdateError(CommandError):
    """An update failed or was refused; the message says what happened and what to do."""


@dataclass
class Options:
    channel: str
    keys: list[bytes]
    to: str | None = None
    auto: bool = False
    download_timeout: float = 600.0
    wait_timeout: float = 90.0
    preflight_timeout: float = install.PREFLIGHT_TIMEOUT
    probation: float = restart.DEFAULT_PROBATION
    progress: Progress | None = field(default=None, repr=False)
    wave_delay: float | None = None  # auto_update = "wave": seconds a release must be out
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def decide(self, current: str | None, manifest: Manifest, bad: Collection[str],
               pinned: str | None) -> Decision:
        return decide(current, manifest.version, bad=bad, pinned=pinned, to=self.to,
                      auto=self.auto, wave_delay=self.wave_delay if self.auto else None,
                      created=manifest.created, now=self.clock())


def channel_for(release_url: str, channel: str | None, to: str | None) -> str:
    """The manifest URL to read: ``--channel``, else the release of ``--to`` next to the
    configured channel (GitHub's ``releases/download/vX.Y.Z/``), else the configured one."""
    if channel:
        return channel
    if to:
        if LATEST not in release_url:
            raise UpdateError(f"cannot tell where version {to}'s release.json is from "
                              f"release_url {release_url}; give it with --channel URL",
                              Code.USAGE)
        return release_url.replace(LATEST, f"/releases/download/v{to}/")
    return release_url


def fetch(opts: Options) -> Manifest:
    try:
        return fetch_manifest(opts.channel, opts.keys)
    except ReleaseError as exc:
        emit("update_failed", step="check", channel=opts.channel, error=exc.message)
        message = exc.message
        if exc.kind in ("fetch", "timeout"):
            message += ("; nothing was changed. Check the network, or point `release_url` "
                        "(taskmux config set release_url URL) or --channel at a reachable "
                        "release.json")
        raise UpdateError(message, _RELEASE_CODES.get(exc.kind, Code.UPDATE_UNVERIFIED),
                          {"kind": exc.kind, "channel": opts.channel}) from None


def check(paths: Paths, opts: Options) -> UpdateCheck:
    """What an update would do now. Changes nothing."""
    layout = AppLayout(paths)
    current = layout.current_version() or __version__
    state = layout.load_state()
    bad = bootguard.bad_versions(layout.app)
    manifest = fetch(opts)
    decision = opts.decide(current, manifest, bad, state["pinned"])
    emit("update_checked", current=current, offered=manifest.version, action=decision.action)
    return {"current": current, "offered": manifest.version, "action": decision.action,
            "available": decision.install, "reason": decision.reason,
            "installed_layout": layout.installed(), "pinned": state["pinned"],
            "bad_versions": sorted(bad), "channel": opts.channel,
            "release": manifest.as_dict(), "key_id": manifest.key_id}


def _locked(layout: AppLayout) -> UpdateLock:
    layout.ensure()
    try:
        return UpdateLock(layout.lock_file).acquire()
    except UpdateBusy as exc:
        raise UpdateError(str(exc), Code.UPDATE_BUSY, {"pid": exc.pid}) from None


def _require_installed(layout: AppLayout) -> None:
    if not layout.installed():
        raise UpdateError(
            f"taskmux is not installed in the versioned layout under {layout.app} (no "
            "'current' link), so there is nothing to update: install it with install.sh",
            Code.UPDATE_NOT_INSTALLED)


def update(paths: Paths, opts: Options, first_install: bool = False) -> dict[str, Any]:
    layout = AppLayout(paths)
    if not first_install:
        _require_installed(layout)
    lock = _locked(layout)
    try:
        return _update(paths, layout, opts)
    finally:
        lock.release()


def _python_version(python: str) -> tuple[int, ...]:
    out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:3])"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return tuple(int(p) for p in out.split())


def _update(paths: Paths, layout: AppLayout, opts: Options) -> dict[str, Any]:
    state = layout.load_state()
    current, previous = layout.current_version(), layout.previous_version()
    bad = bootguard.bad_versions(layout.app)
    emit("update_checking", channel=opts.channel, current=current)
    manifest = fetch(opts)
    version = manifest.version
    decision = opts.decide(current, manifest, bad, state["pinned"])
    result: dict[str, Any] = {"action": decision.action, "from": current, "to": version,
                              "offered": version, "reason": decision.reason}
    if decision.action == REFUSE:
        emit("update_refused", version=version, reason=decision.reason)
        raise UpdateError(decision.reason, Code.UPDATE_REFUSED, result)
    if decision.action == NONE:
        if decision.unpin and state["pinned"]:
            state["pinned"] = None
            layout.save_state(state)
            result["unpinned"] = True
        emit("update_up_to_date", current=current, offered=version, reason=decision.reason)
        return result
    assert decision.action == INSTALL
    emit("update_available", current=current, version=version, reason=decision.reason)
    started = time.monotonic()
    python = install.base_python(layout)
    _check_python(python, manifest)
    if layout.is_complete(version) and layout.completed_sha256(version) == manifest.sha256:
        emit("update_reusing", version=version, path=layout.version_dir(version))
    else:
        _install(paths, layout, opts, manifest, python)
    # The switch. From here on a failure is rolled back rather than left as it was.
    now = time.time()
    bootguard.arm(layout.app, version, current, previous, now)
    layout.switch(version, current)
    layout.write_python(python)
    emit("update_switched", previous=current, current=version)
    mode = _restart_onto(paths, layout, version, current, previous, opts)
    if decision.unpin:
        state["pinned"] = None
    state["last"] = {"at": now, "from": current, "to": version, "outcome": "updated"}
    layout.save_state(state)
    pruned = layout.prune()
    elapsed = round(time.monotonic() - started, 3)
    emit("update_done", previous=current, current=version, restart=mode, pruned=pruned,
         seconds=elapsed)
    result.update({"action": "updated", "restart": mode, "pruned": pruned, "seconds": elapsed,
                   "confirmed": mode != restart.NOT_RUNNING})
    return result


def _check_python(python: str, manifest: Manifest) -> None:
    try:
        have = _python_version(python)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise UpdateError(f"cannot run the base interpreter {python}: {exc}",
                          Code.UPDATE_INSTALL_FAILED) from None
    try:
        fits = python_satisfies(manifest.requires_python, have)
    except ValueError as exc:
        raise UpdateError(f"release {manifest.version}: {exc}", Code.UPDATE_UNVERIFIED) from None
    if not fits:
        raise UpdateError(f"taskmux {manifest.version} needs Python {manifest.requires_python}; "
                          f"{python} is {'.'.join(map(str, have))}", Code.UPDATE_REFUSED)


def _restart_onto(paths: Paths, layout: AppLayout, version: str, current: str | None,
                  previous: str | None, opts: Options) -> str:
    """Bounce the daemon onto ``version`` and confirm it, or roll back (raising)."""
    if current is None:  # the first install: nothing ran before, nothing to bounce
        bootguard.disarm(layout.app)
        install.install_guard(layout, version)
        return restart.NOT_RUNNING
    emit("update_restarting", version=version)
    try:
        mode = restart.bounce(paths)
    except CommandError as exc:  # started directly, and it did not come up
        emit("update_failed", step="restart", version=version, error=exc.message)
        _recover(paths, layout, version, current, previous, restart.DIRECT, exc.message, opts)
    emit("update_restarted", version=version, mode=mode)
    if mode == restart.NOT_RUNNING:
        return mode  # the guard stays armed for the daemon's next start
    outcome = restart.wait_for(paths, layout, version, opts.wait_timeout)
    if outcome != restart.OK:
        _recover(paths, layout, version, current, previous, mode, outcome, opts)
    if mode == restart.DIRECT and opts.probation > 0:
        # No service manager would start it again (nor the boot-guard judge it): the update
        # keeps the guard's promise itself by watching the new daemon for a while.
        emit("update_probation", version=version, seconds=opts.probation)
        outcome = restart.hold(paths, layout, version, opts.probation)
        if outcome != restart.OK:
            emit("update_failed", step="probation", version=version, error=outcome)
            _recover(paths, layout, version, current, previous, mode, outcome, opts)
    emit("update_confirmed", version=version)
    install.install_guard(layout, version)
    return mode


def _install(paths: Paths, layout: AppLayout, opts: Options, manifest: Manifest,
             python: str) -> None:
    version = manifest.version
    emit("update_downloading", version=version, url=manifest.url, size=manifest.size)
    try:
        tmp = download(manifest, layout.tmp_dir, opts.download_timeout, opts.progress)
    except ReleaseError as exc:
        emit("update_failed", step="download", version=version, error=exc.message)
        raise UpdateError(exc.message, _RELEASE_CODES.get(exc.kind, Code.UPDATE_UNVERIFIED),
                          {"kind": exc.kind, "version": version}) from None
    package = os.path.join(layout.tmp_dir, manifest.file)  # pip wants the wheel's own name
    os.replace(tmp, package)
    emit("update_verified", version=version, sha256=manifest.sha256, key=manifest.key_id)
    try:
        emit("update_installing", version=version, path=layout.version_dir(version))
        install.create_version(paths, layout, version, package, python)
        install.preflight(paths, layout, version, opts.preflight_timeout)
    except install.InstallFailed as exc:
        layout.remove_version(version)
        emit("update_failed", step="install", version=version, error=exc.message)
        tail = "\n".join(exc.output.strip().splitlines()[-15:])
        raise UpdateError(f"installing {version} failed: {exc.message}; nothing was changed"
                          + (f"\n{tail}" if tail else ""), Code.UPDATE_INSTALL_FAILED,
                          {"version": version, "output": exc.output[-4000:]}) from None
    finally:
        try:
            os.unlink(package)
        except FileNotFoundError:
            pass
    layout.mark_complete(version, manifest.sha256)
    emit("update_preflight_passed", version=version)


def _recover(paths: Paths, layout: AppLayout, bad: str, good: str, good_previous: str | None,
             mode: str, outcome: str, opts: Options) -> NoReturn:
    """The new version did not come up: go back to ``good``, record ``bad``, and raise."""
    if outcome == restart.REVERTED:
        why = "it failed to start and the boot-guard switched back"
    elif outcome == restart.TIMEOUT:
        why = f"it did not answer as {bad} within {opts.wait_timeout:g}s"
    elif outcome == restart.DIED:
        why = (f"it died within {opts.probation:g}s after it started (no service manager "
               "would have restarted it)")
    else:
        why = f"it did not start: {outcome}"
    if bootguard.revert(layout.app, bad, good, good_previous, why, time.time()):
        restart.stop_running(paths)
        if mode == restart.DIRECT:
            try:
                restart.start_direct(paths)
            except CommandError as exc:
                emit("update_failed", step="rollback", version=good, error=exc.message)
    emit("update_rolled_back", bad=bad, current=good, reason=why)
    back = restart.wait_for(paths, layout, good, opts.wait_timeout)
    layout.prune()  # the bad version is neither current nor previous any more
    state = layout.load_state()
    state["last"] = {"at": time.time(), "from": good, "to": bad, "outcome": "rolled_back",
                     "error": why}
    layout.save_state(state)
    extra = "" if back == restart.OK else (
        f" — but {good} is not answering either: see `taskmuxctl daemon status`")
    raise UpdateError(f"update to {bad} rolled back: {why}; {good} is current again and "
                      f"{bad} is marked bad (auto-update skips it){extra}",
                      Code.UPDATE_ROLLED_BACK, {"bad": bad, "current": good, "reason": why})


def rollback(paths: Paths, opts: Options) -> dict[str, Any]:
    """Switch back to ``previous`` and pin it until the user updates explicitly."""
    layout = AppLayout(paths)
    _require_installed(layout)
    lock = _locked(layout)
    try:
        current, previous = layout.current_version(), layout.previous_version()
        if previous is None or not layout.is_complete(previous):
            raise UpdateError(f"there is no previous version to roll back to (current: "
                              f"{current}); `taskmuxctl update --to VERSION` installs a "
                              "specific one", Code.UPDATE_NO_PREVIOUS)
        assert current is not None
        bootguard.disarm(layout.app)
        layout.switch(previous, current)
        state = layout.load_state()
        old_pin, state["pinned"] = state["pinned"], previous
        layout.save_state(state)
        emit("update_rollback", previous=current, current=previous, pinned=previous)
        mode = restart.bounce(paths)
        if mode != restart.NOT_RUNNING and \
                restart.wait_for(paths, layout, previous, opts.wait_timeout) != restart.OK:
            layout.switch(current, previous)
            state["pinned"] = old_pin
            layout.save_state(state)
            restart.stop_running(paths)
            if mode == restart.DIRECT:
                restart.start_direct(paths)
            raise UpdateError(f"{previous} did not come up; switched back to {current}",
                              Code.UPDATE_ROLLED_BACK, {"current": current})
        state["last"] = {"at": time.time(), "from": current, "to": previous,
                         "outcome": "rolled_back_by_user"}
        layout.save_state(state)
        return {"action": "rolled_back", "from": current, "to": previous, "pinned": previous,
                "restart": mode}
    finally:
        lock.release()


def mark_bad(paths: Paths, version: str, reason: str, by: str = "fleet") -> dict[str, Any]:
    """Record ``version`` as bad here (``update --mark-bad``, what a fleet rollout runs on
    every machine when a canary fails): auto-update skips it and a plain ``update`` refuses
    it; ``update --to VERSION`` still installs it."""
    layout = AppLayout(paths)
    layout.ensure()
    bootguard.mark_bad(layout.app, version, reason, time.time(), by=by)
    emit("update_marked_bad", version=version, reason=reason, by=by)
    return {"action": "marked_bad", "version": version, "reason": reason,
            "current": layout.current_version(),
            "bad_versions": sorted(bootguard.bad_versions(layout.app))}


def repair(paths: Paths) -> list[str]:
    """Put back what an installed layout needs besides its versions (install.sh re-runs)."""
    layout = AppLayout(paths)
    current = layout.current_version()
    fixed: list[str] = []
    if current is None:
        return fixed
    if layout.python() is None:
        layout.write_python(install.base_python(layout))
        fixed.append(os.path.basename(layout.layout_file))
    if not os.path.exists(layout.guard_script):
        install.install_guard(layout, current)
        fixed.append(os.path.basename(layout.guard_script))
    return fixed
