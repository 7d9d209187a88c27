"""``fleet update``'s sequencing on fake machines and a fake clock (the real machines behind
sshd are in tests/test_fleet_update.py): canaries then waves, the soak, halting, who gets the
release marked bad, and what is left alone."""

from __future__ import annotations

from typing import Any

import pytest

from taskmuxctl.fleet import Host
from taskmuxctl.rollout import HostFailed, Plan, Runner


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)


class FakeFleet:
    """Machines as dicts; ``update`` switches the version unless told how to fail."""

    def __init__(self, clock: Clock, versions: dict[str, str], offered: str = "2.0.0") -> None:
        self.clock = clock
        self.version = dict(versions)
        self.offered = offered
        self.bad: dict[str, set[str]] = {n: set() for n in versions}
        self.tasks = {n: frozenset({f"p/{n}-web"}) for n in versions}
        self.calls: list[tuple[str, str, float]] = []
        self.down: set[str] = set()
        self.rolls_back: set[str] = set()  # the update there fails and rolls itself back
        self.sick_after: dict[str, float] = {}  # loses its task this long after the update
        self.updated_at: dict[str, float] = {}
        self.gone_after: dict[str, float] = {}  # ssh cannot reach it this long after
        self.ready_after: dict[str, float] = {}  # READY only this long after the update

    def _reach(self, host: Host) -> None:
        if host.name in self.down:
            raise HostFailed(f"{host.name} is unreachable (connection refused)")
        gone = self.gone_after.get(host.name)
        since = self.updated_at.get(host.name)
        if gone is not None and since is not None and self.clock.now - since >= gone:
            from taskmuxctl.core.protocol import Code
            from taskmuxctl.core.rpcclient import DaemonUnavailable

            raise DaemonUnavailable(Code.DAEMON_UNREACHABLE, "unreachable",
                                    f"{host.name} is unreachable (connection refused)")

    def check(self, host: Host, to: str | None) -> dict[str, Any]:
        self.calls.append(("check", host.name, self.clock.now))
        self._reach(host)
        return {"current": self.version[host.name], "offered": to or self.offered,
                "bad_versions": sorted(self.bad[host.name]), "installed_layout": True}

    def update(self, host: Host, version: str) -> dict[str, Any]:
        self.calls.append(("update", host.name, self.clock.now))
        self._reach(host)
        self.clock.sleep(5)  # an update takes a while
        if host.name in self.rolls_back:
            self.bad[host.name].add(version)
            raise HostFailed(f"update to {version} rolled back", blame=True)
        self.version[host.name] = version
        self.updated_at[host.name] = self.clock.now
        return {"action": "updated"}

    def probe(self, host: Host) -> tuple[str | None, frozenset[str]]:
        self._reach(host)
        sick = self.sick_after.get(host.name)
        since = self.updated_at.get(host.name)
        slow = self.ready_after.get(host.name)
        if slow is not None and since is not None and self.clock.now - since < slow:
            return None, frozenset()  # answers, but has not reached READY yet
        if sick is not None and since is not None and self.clock.now - since >= sick:
            return self.version[host.name], frozenset()
        return self.version[host.name], self.tasks[host.name]

    def mark_bad(self, host: Host, version: str, reason: str) -> None:
        self.calls.append(("mark_bad", host.name, self.clock.now))
        self._reach(host)
        self.bad[host.name].add(version)

    def revert(self, host: Host, version: str) -> None:
        self.calls.append(("revert", host.name, self.clock.now))
        self.version[host.name] = version


def hosts(*names: str) -> list[Host]:
    return [Host(n, f"ssh://{n}", []) for n in names]


def run(fleet: FakeFleet, names: list[str], clock: Clock, **plan: Any) -> Any:
    plan.setdefault("soak", 10.0)
    plan.setdefault("settle", 30.0)
    lines: list[str] = []
    done = Runner(hosts(*names), fleet, Plan(**plan), lines.append, clock, clock.sleep).run()
    return done, lines


def updates(fleet: FakeFleet) -> list[tuple[str, float]]:
    return [(name, at) for kind, name, at in fleet.calls if kind == "update"]


def test_canary_then_waves_each_after_the_soak() -> None:
    clock = Clock()
    names = ["c", "a", "b", "d", "e"]
    fleet = FakeFleet(clock, {n: "1.0.0" for n in names})
    done, lines = run(fleet, names, clock, canary=1, wave=2, soak=10.0)
    assert done.completed and done.halted is None and done.version == "2.0.0"
    assert all(v == "2.0.0" for v in fleet.version.values())
    order = updates(fleet)
    assert [n for n, _ in order] in (["c", "a", "b", "d", "e"], ["c", "b", "a", "d", "e"],
                                     ["c", "a", "b", "e", "d"], ["c", "b", "a", "e", "d"])
    at = dict(order)
    # Each stage starts only after the one before has soaked.
    assert at["a"] >= at["c"] + 5 + 10 and at["b"] >= at["c"] + 15
    assert at["d"] >= max(at["a"], at["b"]) + 15
    phases = {e["name"]: e["phase"] for e in done.hosts}
    assert phases == {"c": "canary", "a": "wave 1", "b": "wave 1", "d": "wave 2", "e": "wave 2"}
    assert {e["outcome"] for e in done.hosts} == {"updated"}
    assert all(e["from"] == "1.0.0" and e["to"] == "2.0.0" for e in done.hosts)
    assert lines[0] == "canary: updating c to 2.0.0"
    assert not any(kind == "mark_bad" for kind, _, _ in fleet.calls)


def test_canary_that_rolls_back_halts_and_marks_bad_everywhere() -> None:
    clock = Clock()
    names = ["c", "a", "b"]
    fleet = FakeFleet(clock, {n: "1.0.0" for n in names})
    fleet.rolls_back.add("c")
    done, _ = run(fleet, names, clock)
    assert not done.completed
    assert done.halted == {"host": "c", "reason": "update to 2.0.0 rolled back",
                           "release_blamed": True}
    assert [n for n, _ in updates(fleet)] == ["c"]  # nobody else was touched
    assert all("2.0.0" in fleet.bad[n] for n in names)
    assert done.marked_bad == names
    by = {e["name"]: e for e in done.hosts}
    assert by["c"]["outcome"] == "failed" and by["c"]["reason"] == "update to 2.0.0 rolled back"
    assert by["a"]["outcome"] == by["b"]["outcome"] == "not_started"
    assert "revert" not in {k for k, _, _ in fleet.calls}  # it put itself back already
    # The next rollout of the same version is refused, unless forced.
    again, _ = run(fleet, names, clock)
    assert not again.completed and "marked bad on a, b, c" in again.halted["reason"]
    assert {e["outcome"] for e in again.hosts} == {"refused"}
    assert len(updates(fleet)) == 1


def test_a_task_lost_during_the_soak_fails_the_stage_and_the_host_goes_back() -> None:
    clock = Clock()
    names = ["c", "a", "b"]
    fleet = FakeFleet(clock, {n: "1.0.0" for n in names})
    fleet.sick_after["a"] = 3.0  # fine at first, loses its task during the soak
    done, _ = run(fleet, names, clock, soak=10.0)
    assert not done.completed and done.halted["host"] == "a"
    assert "soak" in done.halted["reason"] and "p/a-web" in done.halted["reason"]
    assert ("revert", "a") in {(k, n) for k, n, _ in fleet.calls}
    by = {e["name"]: e for e in done.hosts}
    assert by["a"]["reverted_to"] == "1.0.0" and fleet.version["a"] == "1.0.0"
    assert by["c"]["outcome"] == "updated" and by["b"]["outcome"] == "not_started"
    assert all("2.0.0" in fleet.bad[n] for n in names)


def test_a_host_down_halts_without_blaming_the_release() -> None:
    clock = Clock()
    names = ["c", "a", "b"]
    fleet = FakeFleet(clock, {n: "1.0.0" for n in names})
    fleet.down.add("a")
    done, _ = run(fleet, names, clock)
    assert not done.completed and done.halted["host"] == "a"
    assert "unreachable" in done.halted["reason"] and done.halted["release_blamed"] is False
    assert fleet.version == {"c": "2.0.0", "a": "1.0.0", "b": "1.0.0"}
    assert not any(fleet.bad.values()) and done.marked_bad == []
    assert {e["name"]: e["outcome"] for e in done.hosts} == {
        "c": "updated", "a": "failed", "b": "not_started"}


def test_not_ready_in_time_is_a_failure_of_the_release() -> None:
    clock = Clock()
    fleet = FakeFleet(clock, {"c": "1.0.0", "a": "1.0.0"})
    real_update = fleet.update

    def stuck(host: Host, version: str) -> dict[str, Any]:
        out = real_update(host, version)
        fleet.version[host.name] = "1.0.0"  # the old daemon keeps answering
        return out

    fleet.update = stuck  # type: ignore[method-assign]
    done, _ = run(fleet, ["c", "a"], clock, settle=20.0)
    assert done.halted["host"] == "c" and "not ready within 20s" in done.halted["reason"]
    assert "answers as 1.0.0, not 2.0.0" in done.halted["reason"]
    assert done.halted["release_blamed"] is True and sorted(done.marked_bad) == ["a", "c"]


def test_who_is_left_alone() -> None:
    clock = Clock()
    fleet = FakeFleet(clock, {"c": "2.0.0", "a": "3.0.0", "b": "1.0.0"})
    done, _ = run(fleet, ["c", "a", "b"], clock)
    assert done.completed
    by = {e["name"]: (e["outcome"], e["phase"]) for e in done.hosts}
    assert by == {"c": ("up_to_date", None), "a": ("skipped", None), "b": ("updated", "canary")}
    assert fleet.version["a"] == "3.0.0"
    forced, _ = run(fleet, ["c", "a", "b"], clock, to="2.0.0", force=True)
    assert forced.completed and fleet.version["a"] == "2.0.0"


@pytest.mark.parametrize("canary", [0, 2])
def test_canary_count(canary: int) -> None:
    clock = Clock()
    names = ["a", "b", "c"]
    fleet = FakeFleet(clock, {n: "1.0.0" for n in names})
    done, _ = run(fleet, names, clock, canary=canary, wave=1)
    assert done.completed
    phases = [e["phase"] for e in done.hosts]
    assert phases == (["wave 1", "wave 2", "wave 3"] if canary == 0 else
                      ["canary", "canary", "wave 1"])


def test_a_host_lost_during_its_soak_halts_without_blaming_the_release() -> None:
    clock = Clock()
    names = ["c", "a", "b"]
    fleet = FakeFleet(clock, {n: "1.0.0" for n in names})
    fleet.gone_after["a"] = 2.0
    done, _ = run(fleet, names, clock, soak=10.0)
    assert done.halted["host"] == "a" and done.halted["release_blamed"] is False
    assert done.halted["reason"].startswith("lost during the update: a is unreachable")
    assert done.marked_bad == [] and not any(fleet.bad.values())
    assert "revert" not in {k for k, _, _ in fleet.calls}
    assert {e["name"]: e["outcome"] for e in done.hosts} == {
        "c": "updated", "a": "failed", "b": "not_started"}


def test_the_soak_starts_at_ready_and_a_daemon_never_ready_fails() -> None:
    clock = Clock()
    fleet = FakeFleet(clock, {"c": "1.0.0", "a": "1.0.0"})
    fleet.ready_after["c"] = 12.0
    done, _ = run(fleet, ["c", "a"], clock, settle=30.0, soak=10.0)
    assert done.completed
    at = dict(updates(fleet))
    assert at["a"] >= at["c"] + 5 + 12 + 10  # update, READY, then the whole soak
    clock2 = Clock()
    fleet2 = FakeFleet(clock2, {"c": "1.0.0", "a": "1.0.0"})
    fleet2.ready_after["c"] = 1e9
    done2, _ = run(fleet2, ["c", "a"], clock2, settle=30.0)
    assert done2.halted["host"] == "c" and done2.halted["release_blamed"] is True
    assert "not ready within 30s" in done2.halted["reason"]
    assert "has not reached READY" in done2.halted["reason"]
    assert fleet2.version["c"] == "1.0.0"  # put back


def test_in_a_wave_the_release_is_blamed_even_when_another_machine_is_down() -> None:
    clock = Clock()
    names = ["c", "a", "b"]
    fleet = FakeFleet(clock, {n: "1.0.0" for n in names})
    fleet.down.add("a")
    fleet.rolls_back.add("b")
    done, _ = run(fleet, names, clock, canary=1, wave=2)
    assert done.halted["host"] == "b" and done.halted["release_blamed"] is True
    assert done.marked_bad == ["c", "b"]  # a is down: it could not be marked
    by = {e["name"]: e for e in done.hosts}
    assert by["a"]["marked_bad"] is False and "unreachable" in by["a"]["mark_bad_error"]
    from taskmuxctl.commands.fleet import rollout_text

    text = "\n".join(rollout_text(done))
    assert "! rollout of 2.0.0 halted at b: update to 2.0.0 rolled back" in text
    assert "! 2.0.0 is marked bad on c, b" in text
    assert "! could not mark it bad on a (a is unreachable (connection refused)); once it is " \
        "back: `ssh a taskmux update --mark-bad 2.0.0`" in text


def test_the_table_says_where_each_machine_is() -> None:
    from taskmuxctl.commands.fleet import rollout_text

    clock = Clock()
    names = ["c", "a", "b"]
    fleet = FakeFleet(clock, {n: "1.0.0" for n in names})
    fleet.sick_after["a"] = 3.0
    text = "\n".join(rollout_text(run(fleet, names, clock)[0]))
    header, *rows = text.splitlines()
    assert header.split() == ["HOST", "PHASE", "FROM", "TO", "OUTCOME", "REASON"]
    assert rows[0].split()[:6] == ["c", "canary", "1.0.0", "2.0.0", "updated", "answers"]
    assert rows[1].split()[:6] == ["a", "wave", "1", "1.0.0", "2.0.0", "failed"]
    assert "! a was put back on 1.0.0" in text
    done, _ = run(FakeFleet(clock, {"c": "1.0.0"}), ["c"], clock)
    assert rollout_text(done)[-1] == "rollout of 2.0.0 completed"
