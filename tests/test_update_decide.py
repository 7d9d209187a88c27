"""The pure parts of self-update: the decision, versions, the boot-guard's policy, jitter."""

from __future__ import annotations

from typing import Any

import pytest

from taskmuxctl.core.update import bootguard
from taskmuxctl.core.update.decide import INSTALL, NONE, REFUSE, decide
from taskmuxctl.core.update.release import python_satisfies, version_key
from taskmuxd.updater import check_delay, supervised_by

BAD = frozenset({"1.3.0"})


@pytest.mark.parametrize(("current", "offered", "kw", "action", "unpin"), [
    # auto-update: only strictly newer, never bad, never while pinned
    ("1.0.0", "1.1.0", {"auto": True}, INSTALL, False),
    ("1.1.0", "1.1.0", {"auto": True}, NONE, False),
    ("1.1.0", "1.0.0", {"auto": True}, NONE, False),
    ("1.1.0", "1.3.0", {"auto": True, "bad": BAD}, NONE, False),
    ("1.1.0", "1.4.0", {"auto": True, "bad": BAD}, INSTALL, False),
    ("1.0.0", "1.1.0", {"auto": True, "pinned": "1.0.0"}, NONE, False),
    # explicit update: refuses downgrades and bad versions, ends a pin
    ("1.0.0", "1.1.0", {}, INSTALL, True),
    ("1.0.0", "1.1.0", {"pinned": "1.0.0"}, INSTALL, True),
    ("1.1.0", "1.1.0", {"pinned": "1.1.0"}, NONE, True),
    ("1.1.0", "1.0.0", {}, REFUSE, False),
    ("1.1.0", "1.3.0", {"bad": BAD}, REFUSE, False),
    # --to: exactly that version, even older or bad; it must be what the channel offers
    ("1.1.0", "1.0.0", {"to": "1.0.0"}, INSTALL, True),
    ("1.1.0", "1.3.0", {"to": "1.3.0", "bad": BAD}, INSTALL, True),
    ("1.1.0", "1.1.0", {"to": "1.1.0"}, NONE, True),
    ("1.1.0", "1.2.0", {"to": "1.0.0"}, REFUSE, False),
    # nothing installed yet: the first install takes what is offered
    (None, "1.1.0", {}, INSTALL, False),
    (None, "1.1.0", {"auto": True}, INSTALL, False),
])
def test_decision_table(current: str | None, offered: str, kw: dict[str, Any], action: str,
                        unpin: bool) -> None:
    d = decide(current, offered, **kw)
    assert (d.action, d.unpin) == (action, unpin), d.reason
    assert d.reason  # always says why


def test_refusals_say_what_to_do() -> None:
    assert "--to 1.0.0" in decide("1.1.0", "1.0.0").reason
    assert "--to 1.3.0" in decide("1.1.0", "1.3.0", bad=BAD).reason
    assert "taskmuxctl update" in decide("1.0.0", "1.1.0", auto=True, pinned="1.0.0").reason


def test_version_order() -> None:
    ordered = ["0.9", "1.0.dev1", "1.0a1", "1.0a2", "1.0b1", "1.0rc1", "1.0", "1.0.post1",
               "1.0.1", "1.2", "1.10", "2.0"]
    assert sorted(ordered, key=version_key) == ordered
    assert version_key("1.0") == version_key("1.0.0")
    for bad in ("", "v1.0", "1.0-beta", "latest", "1..2"):
        with pytest.raises(ValueError, match="not a version"):
            version_key(bad)


def test_requires_python() -> None:
    assert python_satisfies(">=3.11", (3, 11, 7))
    assert not python_satisfies(">=3.12", (3, 11, 7))
    assert python_satisfies(">=3.11, <4", (3, 13, 0))
    assert not python_satisfies("!=3.11", (3, 11, 2))
    with pytest.raises(ValueError, match="cannot read"):
        python_satisfies("~=3.11", (3, 11, 0))


def test_check_delay_is_jittered_within_bounds() -> None:
    assert check_delay(300, 0.0, first=False) == pytest.approx(240)
    assert check_delay(300, 1.0, first=False) == pytest.approx(360)
    assert check_delay(300, 0.5, first=True) == pytest.approx(150)
    assert check_delay(300, 0.0, first=True) == 1.0  # never a busy loop


def test_supervision_is_read_from_the_environment() -> None:
    assert supervised_by({}) is None
    assert supervised_by({"INVOCATION_ID": "abc"}) == "systemd"
    assert supervised_by({"XPC_SERVICE_NAME": "com.taskmux.daemon"}) == "launchd"
    assert supervised_by({"XPC_SERVICE_NAME": "0"}) is None
    assert supervised_by({"TASKMUX_SUPERVISED": "runit"}) == "runit"


# -- the boot-guard's policy, with a fake clock -----------------------------------------------

BOOT = "boot-1"


class Guard:
    """Drives ``bootguard.decide`` like successive service starts would."""

    def __init__(self) -> None:
        self.rec = bootguard.empty_record()
        self.rec["armed"] = {"version": "1.3.0", "previous": "1.0.0",
                             "previous_previous": None, "at": 1000.0}
        self.current = "1.3.0"
        self.run: dict[str, Any] | None = None
        self.n = 0

    def start(self, now: float, boot: str = BOOT) -> dict[str, Any]:
        self.n += 1
        self.rec, action = bootguard.decide(self.rec, self.current, self.run, boot, now,
                                            f"a{self.n}", failures=3, window=300)
        if action["kind"] == "revert":
            self.current = action["version"]
        return action

    def reached_ready(self, stable: bool = False, clean_exit: bool = False) -> None:
        self.run = {"attempt": f"a{self.n}", "ready_at": 1.0, "stable_at": 2.0 if stable else None,
                    "exit": {"code": 0} if clean_exit else None}


def test_guard_reverts_after_three_failed_starts_and_remembers() -> None:
    g = Guard()
    for t in (1001.0, 1003.0, 1005.0):
        assert g.start(t)["kind"] == "exec"  # crashes before READY each time
    action = g.start(1007.0)
    assert action == {"kind": "revert", "version": "1.0.0", "bad": "1.3.0", "previous": None,
                      "attempt": "a4"}
    assert "1.3.0" in g.rec["bad"] and g.rec["armed"] is None
    assert [e["event"] for e in g.rec["events"]] == ["update_guard_reverted"]
    # Disarmed: further starts of the good version are never judged.
    for t in (1010.0, 1011.0, 1012.0, 1013.0):
        assert g.start(t) == {"kind": "exec", "version": "1.0.0", "attempt": f"a{g.n}"}
    assert "1.3.0" in g.rec["bad"]


def test_guard_counts_crashes_not_starts() -> None:
    g = Guard()
    g.start(1001.0)
    g.reached_ready(clean_exit=True)  # a manual restart: READY, then an orderly stop
    g.start(1002.0)
    g.reached_ready(clean_exit=True)
    g.start(1003.0)
    g.reached_ready(clean_exit=True)
    assert g.start(1004.0)["kind"] == "exec"
    assert g.start(1005.0)["kind"] == "exec"  # one crash so far (a4)
    assert g.current == "1.3.0"


def test_guard_never_reverts_a_version_that_ran_a_while() -> None:
    g = Guard()
    g.start(1001.0)
    g.reached_ready(stable=True)
    assert g.start(1100.0)["kind"] == "exec"
    assert g.rec["armed"] is None  # proved: disarmed for good
    g.run = None
    for t in (1101.0, 1102.0, 1103.0, 1104.0, 1105.0):
        assert g.start(t)["kind"] == "exec"  # later crashes are the service manager's business
    assert g.current == "1.3.0" and not g.rec["bad"]


def test_guard_ignores_a_reboot_and_old_failures() -> None:
    g = Guard()
    g.start(1001.0, boot="boot-0")  # cut short by a reboot
    g.start(1002.0, boot="boot-0")
    assert g.start(1050.0)["kind"] == "exec"  # the two earlier attempts were another boot
    assert g.start(1052.0)["kind"] == "exec"
    g2 = Guard()
    g2.start(1001.0)
    g2.start(1002.0)
    assert g2.start(1500.0)["kind"] == "exec"  # outside the window: not "a few times quickly"
    assert g2.start(1501.0)["kind"] == "exec"
    assert g2.current == "1.3.0"


def test_guard_does_nothing_unarmed_or_after_someone_else_switched() -> None:
    g = Guard()
    g.rec["armed"] = None
    for t in range(10):
        assert g.start(1000.0 + t)["kind"] == "exec"
    g = Guard()
    g.start(1001.0)
    g.current = "1.0.0"  # `update --rollback` switched away meanwhile
    assert g.start(1002.0) == {"kind": "exec", "version": "1.0.0", "attempt": "a2"}
    assert g.rec["armed"] is None


def test_guard_cannot_revert_without_the_previous_version() -> None:
    g = Guard()
    for t in (1001.0, 1002.0, 1003.0):
        g.start(t)
    rec, action = bootguard.decide(g.rec, "1.3.0", None, BOOT, 1004.0, "a4", can_revert=False)
    assert action["kind"] == "exec" and not rec["bad"]


def test_update_settings_are_validated() -> None:
    from taskmuxctl.core import settings
    from taskmuxctl.core.errors import SettingsError

    good = settings.parse('trusted_keys = ["+vY1WFt4/9Bu10v/Em0yla7ADVNlzVHMbxbnH+xd5D4="]\n'
                          'auto_update = true\nupdate_check_interval = 60\n', "t")
    assert good.auto_update and good.update_check_interval == 60
    assert good.release_url.endswith("/releases/latest/download/release.json")
    for text, problem in [('trusted_keys = ["bm90IGEga2V5"]', "not a 32-byte"),
                          ('trusted_keys = ["%%%"]', "not base64"),
                          ('release_url = "ftp://x/release.json"', "https://"),
                          ("update_check_interval = 0", "greater than or equal to 1")]:
        with pytest.raises(SettingsError, match=problem):
            settings.parse(text, "t")


def test_progress_bar_redraws_in_place_and_ends_the_line() -> None:
    import io

    from taskmuxctl.commands.update import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(out)
    bar(0, 2_000_000)
    bar(1_000_000, 2_000_000)  # within 0.1 s of the last draw: skipped
    bar(2_000_000, 2_000_000)  # the end is always drawn
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("100%  2.0/2.0 MB\n")
    assert "[" + "#" * 30 + "]" in text


def test_wave_policy_waits_for_the_release_to_be_out_long_enough() -> None:
    """auto_update = "wave": a machine takes a release only ``update_wave_delay`` seconds
    after the publish time in its signed manifest; groups with different delays take it in
    turn. A fake clock: no sleeping."""
    from taskmuxctl.core.update.decide import released_at, wave_wait

    created = "2026-03-01T12:00:00Z"
    out = released_at(created)
    assert out is not None
    hour = 3600.0
    delays = {"canary": 0.0, "early": hour, "rest": 24 * hour}
    took: dict[str, float] = {}
    now = out - 60  # a clock a minute behind the release server: nobody takes it yet
    while now <= out + 48 * hour:
        for group, delay in delays.items():
            d = decide("1.0.0", "1.1.0", auto=True, wave_delay=delay, created=created, now=now)
            if d.install:
                took.setdefault(group, now)
            elif group not in took:
                assert d.action == NONE and "update_wave_delay" in d.reason
        now += 600
    assert took["canary"] - out < 600
    assert hour <= took["early"] - out < hour + 600
    assert 24 * hour <= took["rest"] - out < 24 * hour + 600
    assert wave_wait(created, out + 10, hour) == hour - 10
    # The other auto rules still come first; an explicit update ignores the delay.
    assert not decide("1.0.0", "1.1.0", auto=True, wave_delay=0.0, created=created, now=out,
                      bad={"1.1.0"}).install
    assert decide("1.0.0", "1.1.0", wave_delay=hour, created=created, now=out).install
    # No policy: at once. An unreadable publish time: never by itself.
    assert decide("1.0.0", "1.1.0", auto=True, created=created, now=out - 1e6).install
    d = decide("1.0.0", "1.1.0", auto=True, wave_delay=0.0, created="yesterday", now=out)
    assert d.action == NONE and "cannot tell when 1.1.0 was released" in d.reason
    assert released_at("2026-13-01T00:00:00Z") is None


def test_wave_settings() -> None:
    from pydantic import ValidationError

    from taskmuxctl.core.settings import Settings

    assert Settings.model_validate({"auto_update": "wave"}).auto_update == "wave"
    assert Settings.model_validate({"auto_update": True}).auto_update is True
    for bad in ({"auto_update": "sometimes"}, {"update_wave_delay": -1}):
        with pytest.raises(ValidationError):
            Settings.model_validate(bad)
