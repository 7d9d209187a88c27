"""``taskmux fleet update``: one release rolled out over the fleet in stages.

1. *Preflight*, every machine at once: ``taskmuxctl update --check`` there says what it runs,
   what its channel offers and which versions it has marked bad. The version to roll out is
   ``--to``, else the newest one offered. It is refused when any machine has it marked bad
   (``--force`` rolls it out anyway); a machine that runs it already is left alone, one
   that runs a newer one is skipped (``--force`` downgrades it).
2. *Canaries*, then *waves* (each stage's machines at once): for each machine, the set of
   tasks that are well (running, not unhealthy) is read, the machine runs its own
   ``taskmuxctl update --to VERSION`` (which switches, restarts the daemon, and rolls back
   by itself when the new daemon does not come up), and then its daemon must answer as the
   new version with at least the same tasks well, and keep doing so for the soak time.
3. The first stage with a failure ends the rollout. When the release is to blame (it was
   rolled back, failed to install, or did not come up as it should) it is marked bad on every
   machine (``update --mark-bad``: auto-update skips it, a plain ``update`` refuses it), and
   a machine left on it by a failed soak is put back on its old version. A machine that
   cannot be reached (ssh does not get there, before or during its update) halts the
   rollout without blaming the release.

The machines are reached through ``Ops`` (``SshOps``: ssh for the commands, the ``--host``
channel for the daemon's answers), so the sequencing is tested on a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from taskmuxctl.core.protocol import Code

UPDATED = "updated"
UP_TO_DATE = "up_to_date"
SKIPPED = "skipped"
FAILED = "failed"
NOT_STARTED = "not_started"
REFUSED = "refused"
# Codes of a remote ``update`` that put the blame on the release itself.
BLAMED_CODES = frozenset({Code.UPDATE_ROLLED_BACK, Code.UPDATE_INSTALL_FAILED})
# ``DaemonUnavailable.reason`` values that mean ssh did not get to the machine at all: the
# machine (or the network) is down, which says nothing about the release.
UNREACHABLE = frozenset({"unreachable", "host_key", "auth", "ssh_failed", "no_ssh"})


class HostFailed(Exception):
    """One machine's step failed; ``blame``: the release is the cause (mark it bad)."""

    def __init__(self, reason: str, blame: bool = False, on_new: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.blame = blame
        self.on_new = on_new  # the machine was left running the new version


class Ops(Protocol):
    def check(self, host: Any, to: str | None) -> dict[str, Any]: ...

    def update(self, host: Any, version: str) -> dict[str, Any]: ...

    def probe(self, host: Any) -> tuple[str | None, frozenset[str]]: ...

    def mark_bad(self, host: Any, version: str, reason: str) -> None: ...

    def revert(self, host: Any, version: str) -> None: ...


@dataclass
class Plan:
    to: str | None = None
    canary: int = 1
    wave: int = 1
    soak: float = 60.0
    settle: float = 120.0  # seconds for a machine to answer as the new version, tasks well
    force: bool = False


@dataclass
class Rollout:
    version: str | None
    hosts: list[dict[str, Any]]
    completed: bool
    halted: dict[str, Any] | None = None
    marked_bad: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "completed": self.completed, "halted": self.halted,
                "marked_bad": self.marked_bad, "hosts": self.hosts}


def _version_key(text: str) -> tuple[Any, ...]:
    from taskmuxctl.core.update.release import version_key

    return version_key(text)


def _parallel(items: list[Any], work: Callable[[Any], Any]) -> list[Any]:
    """``work`` on every item at once (a thread each); results (or the exception) in order."""
    results: list[Any] = [None] * len(items)

    def run(i: int) -> None:
        try:
            results[i] = work(items[i])
        except Exception as exc:  # handed back to the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class Runner:
    def __init__(self, hosts: list[Any], ops: Ops, plan: Plan,
                 say: Callable[[str], None] = lambda line: None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.hosts = hosts
        self.ops = ops
        self.plan = plan
        self.say = say
        self.clock = clock
        self.sleep = sleep
        self.entries = {h.name: {"name": h.name, "target": h.target, "phase": None,
                                 "from": None, "to": None, "outcome": NOT_STARTED,
                                 "reason": None} for h in hosts}

    def _result(self, version: str | None, completed: bool, halted: dict[str, Any] | None,
                marked: list[str] | None = None) -> Rollout:
        return Rollout(version, [self.entries[h.name] for h in self.hosts], completed, halted,
                       marked or [])

    # -- preflight ------------------------------------------------------------------------

    def run(self) -> Rollout:
        checks = _parallel(self.hosts, lambda h: self.ops.check(h, self.plan.to))
        found: dict[str, dict[str, Any]] = {}
        unreachable: dict[str, str] = {}
        for host, got in zip(self.hosts, checks, strict=True):
            if isinstance(got, Exception):
                unreachable[host.name] = getattr(got, "reason", None) or str(got)
            else:
                found[host.name] = got
                self.entries[host.name]["from"] = got.get("current")
        version = self.plan.to
        if version is None:
            offers = [str(c["offered"]) for c in found.values() if c.get("offered")]
            if not offers:
                why = "no machine could say what its channel offers: " + "; ".join(
                    f"{n}: {r}" for n, r in unreachable.items()) if unreachable else \
                    "no machine to update"
                return self._refuse(None, why)
            version = max(offers, key=_version_key)
        bad_on = sorted(n for n, c in found.items() if version in (c.get("bad_versions") or []))
        if bad_on and not self.plan.force:
            return self._refuse(version, f"{version} is marked bad on {', '.join(bad_on)}; "
                                "`taskmux fleet update --to VERSION --force` rolls it out "
                                "anyway")
        todo = []
        for host in self.hosts:
            entry = self.entries[host.name]
            entry["to"] = version
            current = entry["from"]
            if host.name in found and current == version:
                entry.update(outcome=UP_TO_DATE, reason=f"runs {version} already")
            elif host.name in found and current and not self.plan.force and \
                    _version_key(current) > _version_key(version):
                entry.update(outcome=SKIPPED, reason=f"runs {current}, newer than {version} "
                             "(--force downgrades it)")
            elif host.name in found and not found[host.name].get("installed_layout", True):
                entry.update(outcome=SKIPPED, reason="taskmux is not installed with install.sh "
                             "there, so it cannot update itself")
            else:
                todo.append(host)
        stages = [todo[:self.plan.canary]] if self.plan.canary else []
        rest = todo[self.plan.canary:]
        stages += [rest[i:i + self.plan.wave] for i in range(0, len(rest), self.plan.wave)]
        for i, stage in enumerate(s for s in stages if s):
            phase = "canary" if i == 0 and self.plan.canary else \
                f"wave {i if self.plan.canary else i + 1}"
            for host in stage:
                self.entries[host.name]["phase"] = phase
        for stage in (s for s in stages if s):
            phase = self.entries[stage[0].name]["phase"]
            self.say(f"{phase}: updating {', '.join(h.name for h in stage)} to {version}")
            outcomes = _parallel(stage, lambda h: self._one(h, version, unreachable))
            failed = [(h, e) for h, e in zip(stage, outcomes, strict=True)
                      if isinstance(e, Exception)]
            if failed:
                return self._halt(version, failed)
        return self._result(version, True, None)

    def _refuse(self, version: str | None, why: str) -> Rollout:
        for entry in self.entries.values():
            entry.update(to=version, outcome=REFUSED if entry["outcome"] == NOT_STARTED
                         else entry["outcome"], reason=why)
        return self._result(version, False, {"host": None, "reason": why,
                                             "release_blamed": False})

    # -- one machine ----------------------------------------------------------------------

    def _one(self, host: Any, version: str, unreachable: dict[str, str]) -> None:
        entry = self.entries[host.name]
        started = self.clock()
        try:
            if host.name in unreachable:
                raise HostFailed(unreachable[host.name])
            try:
                _, before = self.ops.probe(host)
            except Exception as exc:
                raise HostFailed(f"cannot read its tasks before the update: "
                                 f"{getattr(exc, 'message', exc)}") from None
            self.ops.update(host, version)
            self._watch(host, version, before)
        except HostFailed as exc:
            entry.update(outcome=FAILED, reason=exc.reason,
                         seconds=round(self.clock() - started, 3))
            self.say(f"! {host.name}: {exc.reason}")
            raise
        except Exception as exc:  # a bug here must not take the other machines' threads down
            entry.update(outcome=FAILED, reason=f"{type(exc).__name__}: {exc}",
                         seconds=round(self.clock() - started, 3))
            self.say(f"! {host.name}: {entry['reason']}")
            raise HostFailed(entry["reason"]) from None
        entry.update(outcome=UPDATED, reason=f"answers as {version} with its tasks as well as "
                     f"before, for {self.plan.soak:g}s",
                     seconds=round(self.clock() - started, 3))
        self.say(f"{host.name}: {entry['from']} -> {version}")

    def _state(self, host: Any, version: str, before: frozenset[str]) -> str | None:
        """None when the machine answers as ``version`` with ``before``'s tasks well; else
        what is wrong."""
        try:
            running, well = self.ops.probe(host)
        except Exception as exc:
            said = getattr(exc, "message", None) or getattr(exc, "reason", None) or str(exc)
            if getattr(exc, "reason", None) in UNREACHABLE:
                raise HostFailed(f"lost during the update: {said}") from None
            return f"its daemon does not answer ({said})"
        if running is None:
            return "its daemon has not reached READY"
        if running != version:
            return f"its daemon answers as {running}, not {version}"
        lost = sorted(before - well)
        if lost:
            return f"tasks not well any more: {', '.join(lost)}"
        return None

    def _watch(self, host: Any, version: str, before: frozenset[str]) -> None:
        """Wait (up to ``settle``) for the machine to be as it should, then ``soak``."""
        step = min(0.5, max(0.02, self.plan.soak / 5))
        deadline = self.clock() + self.plan.settle
        while (wrong := self._state(host, version, before)) is not None:
            if self.clock() >= deadline:
                raise HostFailed(f"not ready within {self.plan.settle:g}s after the update: "
                                 f"{wrong}", blame=True, on_new=True)
            self.sleep(step)
        end = self.clock() + self.plan.soak
        while self.clock() < end:
            self.sleep(min(step, max(0.0, end - self.clock())))
            wrong = self._state(host, version, before)
            if wrong is not None:
                raise HostFailed(f"failed during the {self.plan.soak:g}s soak: {wrong}",
                                 blame=True, on_new=True)

    # -- halting --------------------------------------------------------------------------

    def _halt(self, version: str, failed: list[tuple[Any, Exception]]) -> Rollout:
        # The machine named is the first one whose failure blames the release, if any.
        failed = sorted(failed, key=lambda item: not getattr(item[1], "blame", False))
        host, exc = failed[0]
        reason = getattr(exc, "reason", str(exc))
        blame = bool(getattr(exc, "blame", False))
        halted = {"host": host.name, "reason": reason, "release_blamed": blame}
        self.say(f"halted at {host.name}: {reason}")
        marked: list[str] = []
        if blame:
            why = f"fleet rollout halted at {host.name}: {reason}"
            done = _parallel(self.hosts, lambda h: self.ops.mark_bad(h, version, why))
            for h, got in zip(self.hosts, done, strict=True):
                ok = not isinstance(got, Exception)
                self.entries[h.name]["marked_bad"] = ok
                if ok:
                    marked.append(h.name)
                else:
                    self.entries[h.name]["mark_bad_error"] = getattr(got, "reason", None) or \
                        getattr(got, "message", None) or str(got)
            self.say(f"{version} is marked bad on {len(marked)} of {len(self.hosts)} machines")
            for h, e in failed:
                old = self.entries[h.name]["from"]
                if getattr(e, "on_new", False) and old:
                    try:
                        self.ops.revert(h, old)
                        self.entries[h.name]["reverted_to"] = old
                    except Exception as rexc:
                        self.entries[h.name]["revert_error"] = getattr(rexc, "reason", None) \
                            or getattr(rexc, "message", None) or str(rexc)
        return self._result(version, False, halted, marked)


# -- the machines, over ssh ---------------------------------------------------------------

class SshOps:
    """Each machine's own ``taskmuxctl update`` over ssh; its daemon through ``--host``."""

    def __init__(self, paths: Any, update_timeout: float = 900.0,
                 call_timeout: float = 30.0) -> None:
        self.paths = paths
        self.update_timeout = update_timeout
        self.call_timeout = call_timeout
        self.channels: dict[str, str] = {}  # each machine's channel, as its check said

    def _to(self, host: Any, version: str) -> list[str]:
        """``--to VERSION``, so that every machine gets exactly the version the canaries got.
        A channel that is not laid out as GitHub's (``.../releases/latest/download/``) is
        given too: that machine's update then refuses anything but VERSION."""
        from taskmuxctl.core.update.apply import LATEST

        channel = self.channels.get(host.name)
        extra = ["--channel", channel] if channel and LATEST not in channel else []
        return ["--to", version, *extra]

    def _run(self, host: Any, words: list[str], timeout: float) -> tuple[int, dict[str, Any]]:
        from taskmuxctl.core import jsonio
        from taskmuxctl.core.protocol import RpcError
        from taskmuxctl.core.sshchannel import capture, parse_target

        try:
            code, out, err = capture(self.paths, parse_target(host.target), ["--json", *words],
                                     timeout)
        except RpcError as exc:
            raise HostFailed(exc.message) from None
        lines = [ln for ln in out.splitlines() if ln.strip()]
        try:
            data = jsonio.loads(lines[-1]) if lines else None
        except jsonio.JSONError:
            data = None
        if not isinstance(data, dict):
            said = (err.strip().splitlines() or [f"exit status {code}"])[-1]
            raise HostFailed(f"`taskmuxctl {' '.join(words)}` failed there: {said}")
        return code, data

    def check(self, host: Any, to: str | None) -> dict[str, Any]:
        words = ["update", "--check", *(["--to", to] if to else [])]
        code, data = self._run(host, words, self.call_timeout)
        if code not in (0, 10):
            raise HostFailed(f"update --check: {data.get('error', data)}")
        if to is None and isinstance(data.get("channel"), str):  # (--to derives one)
            self.channels[host.name] = data["channel"]
        return data

    def update(self, host: Any, version: str) -> dict[str, Any]:
        code, data = self._run(host, ["update", *self._to(host, version)],
                               self.update_timeout)
        if code != 0:
            raise HostFailed(f"its update failed: {data.get('error', data)}",
                             blame=data.get("code") in BLAMED_CODES)
        return data

    def revert(self, host: Any, version: str) -> None:
        code, data = self._run(host, ["update", *self._to(host, version)],
                               self.update_timeout)
        if code != 0:
            raise HostFailed(str(data.get("error", data)))

    def mark_bad(self, host: Any, version: str, reason: str) -> None:
        code, data = self._run(host, ["update", "--mark-bad", version, "--reason", reason],
                               self.call_timeout)
        if code != 0:
            raise HostFailed(str(data.get("error", data)))

    def probe(self, host: Any) -> tuple[str | None, frozenset[str]]:
        """The daemon's version and its tasks that are well, through the ssh channel."""
        from taskmuxctl.core.paths import Paths
        from taskmuxctl.core.protocol import Method
        from taskmuxctl.core.rpcclient import Client

        with Client(Paths(self.paths.home, host.target), timeout=self.call_timeout) as client:
            status = client.call(Method.DAEMON_STATUS)
            version = status.get("version")
            if status.get("ready") is False:  # (a daemon older than the flag has no key)
                return None, frozenset()
            well: set[str] = set()
            for p in client.call(Method.PROJECT_LIST)["projects"]:
                if p.get("state") != "ok":
                    continue
                out = client.call(Method.PROJECT_STATUS, {"project": p["name"]})
                well.update(f"{p['name']}/{t['name']}" for t in out.get("tasks", [])
                            if t.get("state") == "running" and t.get("healthy") is not False)
        return (version if isinstance(version, str) else None), frozenset(well)
