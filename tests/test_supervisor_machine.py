"""Scenarios of one project's supervisor machine alone, on a fake clock: each runs in
milliseconds however many minutes of supervision it covers."""

from __future__ import annotations

import itertools

from taskmuxd.policy import Ev, PolicySpec, State, TaskState
from taskmuxd.supervisor import messages as m
from taskmuxd.supervisor.taskspec import TaskSpec
from taskmuxd.supervisor.verdict import HealthSpec
from tests.supervisor_world import World

S = TaskState
PROBED = HealthSpec("probe", interval=10.0, retries=3, grace=0.0)


def spec(restart: str = "on-failure", max_restarts: int = 5, retry_after: float = 300.0,
         depends_on: dict[str, str] | None = None, probe: HealthSpec | None = None,
         oneshot: bool = False, restart_with: tuple[str, ...] = (),
         grace: float = 5.0) -> TaskSpec:
    return TaskSpec(PolicySpec(restart, max_restarts, 2.0, retry_after, oneshot),
                    depends_on or {}, frozenset(restart_with), probe or HealthSpec(),
                    gated_by_probe=probe is not None, stop_grace=grace)


def stack() -> World:
    """migrate (a one-shot), db (probed), cache, and an api needing each in its own way."""
    return World({
        "migrate": spec(oneshot=True),
        "db": spec(restart="no", probe=PROBED),  # kept running while unhealthy
        "cache": spec(),
        "api": spec(depends_on={"migrate": "completed_successfully", "db": "healthy",
                                "cache": "started"}),
    })


# -- dependency chains --------------------------------------------------------------------------


def test_each_condition_is_met_in_its_own_way() -> None:
    w = stack()
    w.behaviour["migrate"] = "hang"
    w.healthy["db"] = False
    assert w.m.waiting_for("api") == ["migrate", "db", "cache"]
    w.start("cache", "db", "migrate")
    # started: running is enough for "started"
    assert w.m.waiting_for("api") == ["migrate", "db"]
    w.advance(5)  # db runs but its probe fails: not healthy
    assert w.state("db") == S.RUNNING and w.m.waiting_for("api") == ["migrate", "db"]
    w.healthy["db"] = True
    w.advance(10)  # judged unhealthy, it is probed every health_interval: the next passes
    assert w.m.waiting_for("api") == ["migrate"]
    w.feed(m.RunnerStarted("migrate"))
    assert w.m.meets("migrate", "completed_successfully") is None  # running is not done
    w.exit("migrate", 0)
    assert w.m.completed("migrate") and w.m.waiting_for("api") == []
    assert w.events("migrate")[-1] == "task_completed"


def test_a_due_restart_is_held_for_each_condition_and_released_when_met() -> None:
    for dep, cond, make_ready in [
        ("db", "healthy", lambda w: w.healthy.update(db=True)),
        ("cache", "started", lambda w: w.feed(m.RunnerStarted("cache"))),
        ("migrate", "completed_successfully", lambda w: w.exit("migrate", 0)),
    ]:
        w = stack()
        w.behaviour.update(migrate="complete")
        w.start("migrate", "db", "cache")
        w.advance(1)
        w.start("api")
        assert w.state("api") == S.RUNNING
        # The dependency goes away (a new run of it that is not there yet), api crashes.
        if dep == "db":
            w.healthy["db"] = False
            w.advance(30)  # three failed probes: unhealthy, and left running
            assert w.state("db") == S.RUNNING and w.m.tasks["db"].health.ok is False
        else:
            w.behaviour[dep] = "hang"
            w.command(dep, Ev.RESTART)
        assert w.m.meets(dep, cond) is not True
        w.exit("api", 1)
        assert w.state("api") == S.BACKOFF
        w.advance(60)  # the restart is due long since, but held
        assert w.state("api") == S.BACKOFF and w.m.held("api") == [dep], dep
        assert "restart_held" in w.events("api")
        make_ready(w)
        w.until(lambda w=w: w.state("api") == S.RUNNING, limit=10.5)  # at the next db probe
        assert w.m.held("api") == [], dep


# -- order --------------------------------------------------------------------------------------


def chain() -> World:
    return World({
        "db": spec(grace=1.0),
        "api": spec(depends_on={"db": "healthy"}, grace=2.0, restart_with=()),
        "web": spec(depends_on={"api": "healthy"}, restart_with=("api",), grace=3.0),
        "worker": spec(depends_on={"api": "started"}),
    })


def test_start_restore_and_stop_share_one_order() -> None:
    w = chain()
    assert w.m.levels() == [["db"], ["api"], ["web", "worker"]]
    assert w.m.levels({"web", "db"}) == [["db"], ["web"]]  # a restore of some of them
    assert w.m.stop_levels(["db", "api", "web", "worker"]) == [["web", "worker"], ["api"],
                                                                ["db"]]


def test_a_stop_signals_level_by_level() -> None:
    w = chain()
    w.start("db", "api", "web", "worker")
    for level in w.m.stop_levels(list(w.m.tasks)):
        for name in level:
            w.command(name, Ev.STOP)
    assert [(s.task, s.signal) for _, s in w.signals] == [
        ("web", "SIGINT"), ("worker", "SIGINT"), ("api", "SIGINT"), ("db", "SIGINT")]
    assert all(w.state(n) == S.STOPPED for n in w.m.tasks)
    assert w.m.tasks["api"].state.manual_stop and w.wakes == {}


def test_the_stop_ladder_climbs_on_the_tasks_grace_period() -> None:
    w = chain()
    w.start("web")
    w.obey_signals = False  # it ignores SIGINT and SIGTERM, and no report of SIGKILL comes
    w.command("web", Ev.STOP)
    w.advance(20)
    assert [(round(at - 1000.0, 3), s.signal) for at, s in w.signals] == [
        (0.0, "SIGINT"), (3.0, "SIGTERM"), (6.0, "SIGKILL")]
    assert [round(at - 1000.0, 3) for at, _ in w.recorded] == [11.0]  # KILL_WAIT later
    assert w.state("web") == S.STOPPED and w.m.tasks["web"].state.last_exit_signal == 9


def test_a_stop_that_works_ends_the_ladder() -> None:
    w = chain()
    w.start("web")
    w.command("web", Ev.STOP)  # exits on SIGINT
    w.advance(60)
    assert [s.signal for _, s in w.signals] == ["SIGINT"] and w.recorded == []


def test_a_stop_while_starting_waits_for_the_process_then_signals_it() -> None:
    w = chain()
    w.behaviour["web"] = "hang"
    w.start("web")
    w.command("web", Ev.STOP)
    assert w.signals == [] and w.state("web") == S.STOPPING
    w.advance(1)
    w.feed(m.RunnerStarted("web"))  # reported late: now it can be stopped
    assert [(round(at - 1000.0, 3), s.signal) for at, s in w.signals] == [(1.0, "SIGINT")]
    assert w.state("web") == S.STOPPED


def test_a_kill_is_sigkill_at_once_and_recorded_if_never_reported() -> None:
    w = chain()
    w.start("web")
    w.obey_signals = False
    w.command("web", Ev.KILL)
    assert [(s.signal, s.kill) for _, s in w.signals] == [("SIGKILL", True)]
    w.advance(5)
    assert len(w.recorded) == 1 and w.state("web") == S.STOPPED


def test_restart_brings_along_the_dependents_that_ask_for_it() -> None:
    w = chain()
    w.start("db", "api", "web", "worker")
    assert w.m.restarted_with(["api"]) == {"web": "api"}  # worker did not ask
    assert w.m.restarted_with(["db"]) == {}  # api does not restart with db, so neither web
    w.command("web", Ev.STOP)
    assert w.m.restarted_with(["api"]) == {}  # a stopped dependent stays stopped


# -- crash loops --------------------------------------------------------------------------------


def test_a_crash_loop_backs_off_then_goes_fatal_then_retries_slowly() -> None:
    w = World({"app": spec(max_restarts=3, retry_after=300.0)})
    w.behaviour["app"] = "crash"
    w.start("app")
    w.advance(1000)
    # Launched at once, then after 1, 2 and 4 s of backoff; fatal; then every 300 s.
    times = w.launch_times("app")
    assert times[:4] == [0.0, 1.0, 3.0, 7.0]
    assert times[4:6] == [307.0, 607.0]
    assert w.events("app").count("max_restarts_reached") >= 3
    assert w.events("app").count("fatal_retry") == 3
    assert w.state("app") == S.FATAL
    w.command("app", Ev.STOP)
    assert w.wakes == {} and w.state("app") == S.STOPPED
    w.advance(3600)
    assert len(w.launch_times("app")) == len(times)  # stopped means stopped


def test_retry_after_zero_stays_down() -> None:
    w = World({"app": spec(max_restarts=1, retry_after=0)})
    w.behaviour["app"] = "crash"
    w.start("app")
    w.advance(3600)
    assert w.launch_times("app") == [0.0, 1.0] and w.state("app") == S.FATAL
    assert w.wakes == {}


# -- a dependency blip --------------------------------------------------------------------------


def test_a_dependency_blip_ends_with_the_dependents_back() -> None:
    quick = HealthSpec("probe", interval=1.0, retries=1, grace=0.0)
    w = World({
        "db": spec(restart="no", probe=quick),
        "api": spec(depends_on={"db": "healthy"}, probe=quick, max_restarts=0, retry_after=0),
        "worker": spec(restart="always", depends_on={"db": "healthy"}, max_restarts=1,
                       retry_after=0),
    })
    w.start("db")
    w.advance(1)
    w.start("api", "worker")
    w.advance(1)
    first = len(w.launches)
    w.healthy.update(db=False, api=False)  # the database goes away; the api fails its probe
    w.behaviour["worker"] = "crash"
    w.exit("worker", 1)  # and the worker crashes, twice: fatal
    w.advance(35)
    assert (w.state("api"), w.state("worker")) == (S.FATAL, S.FATAL)
    assert w.state("db") == S.RUNNING and w.m.meets("db", "healthy") is None
    w.healthy.update(db=True, api=True)
    w.behaviour["worker"] = "run"
    w.advance(2)
    assert (w.state("api"), w.state("worker")) == (S.RUNNING, S.RUNNING)
    assert "dependency_recovered" in w.events("api")
    assert "dependency_recovered" in w.events("worker")
    assert len(w.launches) > first


def test_a_fatal_task_whose_dependencies_never_went_away_is_not_restarted_by_them() -> None:
    w = World({"db": spec(), "api": spec(depends_on={"db": "started"}, max_restarts=0,
                                         retry_after=0)})
    w.start("db", "api")
    w.exit("api", 1)
    w.advance(600)
    assert w.state("api") == S.FATAL and "dependency_recovered" not in w.events("api")


# -- health: startup and liveness ----------------------------------------------------------------


def test_startup_failures_count_only_after_the_grace_then_liveness_needs_retries() -> None:
    w = World({"web": spec(probe=HealthSpec("probe", interval=5.0, retries=2, grace=3.0))})
    w.healthy["web"] = False
    w.start("web")
    w.advance(2.9)  # fast probes, all within the startup grace
    assert w.m.tasks["web"].health.ok is None and "health_check_failed" not in w.events("web")
    w.advance(1.1)  # past the grace: failures count (0.5 s apart by now), two make it unhealthy
    assert w.events("web").count("health_check_failed") == 2
    assert w.state("web") in (S.BACKOFF, S.RUNNING)
    assert ("auto_restart", "unhealthy") in [
        (e, d.get("reason")) for t, e, d in w.emitted if t == "web"]


def test_a_missed_watchdog_is_a_liveness_failure() -> None:
    # A task's own readiness (sd_notify, a log line) comes in as probe results like any other;
    # nothing is polled.
    w = World({"svc": spec(probe=HealthSpec("self", interval=10.0, retries=1, grace=0.0))})
    w.start("svc")
    w.advance(0.1)
    assert w.probes == {} and not w.m.ready("svc")  # not ready until it says so
    w.feed(m.ProbeResult("svc", True, "READY=1", "notify"))
    assert w.m.ready("svc")
    w.feed(m.ProbeResult("svc", False, "no WATCHDOG=1 within 2s", "notify"))
    assert not w.m.ready("svc")
    assert [s.task for _, s in w.signals] == ["svc"]
    failed = [d for t, e, d in w.emitted if e == "health_check_failed"]
    assert failed[-1]["reason"] == "no WATCHDOG=1 within 2s"
    w.advance(1.5)
    assert w.state("svc") == S.RUNNING and w.launch_times("svc") == [0.0, 1.1]


def test_a_probe_result_after_the_run_is_ignored() -> None:
    w = World({"web": spec(probe=PROBED)})
    w.start("web")
    w.exit("web", 0)
    w.feed(m.ProbeResult("web", False, "late", "http"))
    assert "health_check_failed" not in w.events("web")


# -- adoption -----------------------------------------------------------------------------------


def adopt(state: State, found: str, code: int | None = None) -> World:
    w = World({"app": spec(probe=PROBED)}, {"app": state})
    w.feed(m.Adopted("app", found, code))
    return w


def test_adoption_of_every_in_between_state() -> None:
    w = adopt(State(S.STARTING), "running")  # the runner reported to a daemon now gone
    assert w.state("app") == S.RUNNING and "app" in w.probes
    w = adopt(State(S.RUNNING, started_at=900.0), "running")
    assert w.state("app") == S.RUNNING and w.probes["app"] == w.now
    assert "task_adopted" in w.events("app")
    w = adopt(State(S.STOPPING, cause=None, manual_stop=True), "running")
    assert [(s.task, s.signal) for _, s in w.signals] == [("app", "SIGINT")]
    assert w.state("app") == S.STOPPED
    w = adopt(State(S.STARTING), "launching")
    assert w.finishing == ["app"] and w.state("app") == S.STARTING
    w = adopt(State(S.RUNNING, started_at=900.0), "gone")
    assert w.state("app") == S.BACKOFF and w.m.tasks["app"].state.last_exit_signal == 9
    w = adopt(State(S.RUNNING, started_at=900.0), "exited", 0)
    assert w.state("app") == S.EXITED  # on-failure, exit 0
    w = adopt(State(S.BACKOFF, attempt=2, restart_at=1003.0), "waiting")
    assert w.wakes == {"app": 1003.0}
    w.advance(3)
    assert w.state("app") == S.RUNNING
    w = adopt(State(S.FATAL, restart_at=500.0), "waiting")  # overdue: at once
    assert w.wakes == {"app": 1000.0}
    w = adopt(State(S.STOPPED), "waiting")
    assert w.wakes == {} and w.state("app") == S.STOPPED


# -- one-shots ----------------------------------------------------------------------------------


def test_a_one_shot_that_fails_is_not_completed_and_fails_what_needs_it() -> None:
    w = World({"migrate": spec(restart="no", oneshot=True),
               "api": spec(depends_on={"migrate": "completed_successfully"})})
    w.behaviour["migrate"] = 4
    w.start("migrate")
    assert w.state("migrate") == S.EXITED and not w.m.completed("migrate")
    assert w.m.meets("migrate", "completed_successfully") is False
    assert "task_completed" not in w.events("migrate")


def test_a_one_shot_that_fails_is_retried_then_completes_and_releases_a_held_restart() -> None:
    w = World({"migrate": spec(oneshot=True),
               "api": spec(depends_on={"migrate": "completed_successfully"})})
    w.behaviour["migrate"] = "crash"
    w.start("migrate")
    w.m.tasks["api"].state = State(S.BACKOFF, attempt=1, restart_at=w.now + 1)
    w.wakes["api"] = w.now + 1
    w.advance(1.5)
    assert w.m.held("api") == ["migrate"]
    w.behaviour["migrate"] = "complete"
    w.advance(10)
    assert w.m.completed("migrate") and w.state("api") == S.RUNNING
    assert w.launch_times("migrate")[:3] == [0.0, 1.0, 3.0]


# -- start requests: gating on each condition -----------------------------------------------------


def test_a_start_waits_for_each_condition_in_turn() -> None:
    w = stack()
    w.behaviour["migrate"] = "hang"
    w.healthy["db"] = False
    rid = w.request("migrate", "db", "cache", "api")
    assert [t for _, t in w.launches] == ["migrate", "db", "cache"]  # api waits
    w.advance(5)
    assert w.outcome(rid) is None and w.state("api") == S.STOPPED
    w.healthy["db"] = True
    w.advance(10)
    assert w.state("api") == S.STOPPED  # db healthy, cache started, migrate not done
    w.feed(m.RunnerStarted("migrate"))
    w.feed(m.LaunchSettled("migrate"))
    w.exit("migrate", 0)
    assert w.state("api") == S.RUNNING
    assert w.outcome(rid) == {t: ("started", "") for t in ("migrate", "db", "cache", "api")}


def test_a_start_fails_a_task_whose_dependency_is_not_ready_in_time() -> None:
    w = stack()
    w.healthy["db"] = False
    w.behaviour["migrate"] = "complete"
    rid = w.request("migrate", "db", "cache", "api", timeout=20.0)
    w.advance(19.9)
    assert w.outcome(rid) is None
    w.advance(0.2)
    got = w.outcome(rid)
    assert got is not None and got["api"][0] == "failed"
    assert "db was not healthy in time" in got["api"][1] and "healthy False" in got["api"][1]
    assert got["db"] == ("started", "") and w.state("api") == S.STOPPED


def test_a_failed_dependency_fails_what_needs_it_at_once_down_the_chain() -> None:
    w = World({"migrate": spec(restart="no", oneshot=True),
               "api": spec(depends_on={"migrate": "completed_successfully"}),
               "web": spec(depends_on={"api": "started"})})
    w.behaviour["migrate"] = 4
    rid = w.request("migrate", "api", "web")
    got = w.outcome(rid)
    assert got is not None
    assert got["migrate"] == ("failed", "state exited")
    assert got["api"][0] == "failed" and "its dependency migrate failed" in got["api"][1]
    assert got["web"][0] == "failed" and "its dependency api failed" in got["web"][1]
    assert w.launch_times("api") == [] and w.launch_times("web") == []


def test_a_start_answers_only_once_the_launch_with_its_hook_is_over() -> None:
    w = World({"db": spec(), "api": spec(depends_on={"db": "started"})})
    w.behaviour["db"] = "hang"
    rid = w.request("db", "api")
    w.feed(m.RunnerStarted("db"))
    assert w.state("db") == S.RUNNING and w.state("api") == S.STOPPED  # after_start runs
    w.feed(m.LaunchSettled("db"))
    assert w.state("api") == S.RUNNING and w.outcome(rid) is not None


def test_a_running_task_is_already_running_and_a_crash_at_start_is_a_failure() -> None:
    w = World({"a": spec(), "b": spec()})
    w.start("a")
    w.behaviour["b"] = "crash"
    got = w.outcome(w.request("a", "b"))
    assert got == {"a": ("already_running", ""), "b": ("failed", "state backoff")}


def test_a_restore_goes_forward_through_the_levels() -> None:
    w = chain()
    w.request("worker", "web", "api", "db")  # asked in any order
    launched = [t for _, t in w.launches]
    assert launched[:2] == ["db", "api"] and sorted(launched[2:]) == ["web", "worker"]


def test_probes_are_fast_until_the_first_verdict_then_at_the_interval() -> None:
    w = World({"web": spec(probe=HealthSpec("probe", interval=60.0, retries=3, grace=10.0))})
    w.healthy["web"] = False  # the port opens after a second
    w.start("web")
    seen: list[float] = []
    while w.m.tasks["web"].health.ok is None:
        seen.append(w.probes["web"] - 1000.0)
        if w.probes["web"] - 1000.0 >= 1.0:
            w.healthy["web"] = True
        w.advance(w.probes["web"] - w.now)
    gaps = [round(b - a, 4) for a, b in itertools.pairwise(seen)]
    assert seen[0] == 0.0 and gaps[0] == 0.05  # the first probes right after the start
    assert gaps == sorted(gaps) and max(gaps) <= 0.5  # then less often, never past 0.5 s
    assert 1.0 <= seen[-1] < 1.3 and len(seen) < 16  # judged soon after the port opened
    assert w.m.ready("web")
    assert round(w.probes["web"] - 1000.0 - seen[-1], 6) == 60.0  # then every interval


def test_a_config_diff_forgets_tasks_gone_and_rejudges_what_waits() -> None:
    w = World({"db": spec(), "api": spec(depends_on={"db": "started"}), "old": spec()})
    w.behaviour["old"] = "crash"
    w.start("old")
    assert "old" in w.wakes
    w.exit("api", 0)  # (a late report: ignored)
    w.m.tasks["api"].state = State(S.BACKOFF, attempt=1, restart_at=w.now)
    w.feed(m.TimerFired("api"))
    assert w.m.held("api") == ["db"]
    # The new config drops the dependency and the task "old".
    w.feed(m.ConfigChanged({"db": spec(), "api": spec()}))
    assert "old" not in w.wakes and "old" not in w.m.tasks
    assert w.state("api") == S.RUNNING  # nothing to wait for any more
    assert w.m.levels() == [["api", "db"]]


def test_an_event_with_no_row_is_refused_by_name_and_changes_nothing() -> None:
    w = World({"app": spec()})
    w.start("app")
    before = w.m.tasks["app"].state
    actions = w.m.handle(m.Aborted("app"), w.now)  # a hook cannot fail once it runs
    assert actions == [m.Refused("app", "running", "aborted")]
    assert w.m.tasks["app"].state == before


def test_a_wide_start_is_answered_with_each_launch_as_it_settles() -> None:
    """A start of many tasks whose launches settle one by one, out of order, one failing
    and one (hung) still starting when the configuration changes: each outcome is the
    task's own, and the answer comes once the last launch is decided (the machine looks
    again only at the launches an event changed)."""
    names = [f"t{n:02d}" for n in range(30)]
    w = World({n: spec() for n in names})
    for n in names:
        w.behaviour[n] = "hang"
    rid = w.request(*names)
    assert sorted(t for _, t in w.launches) == names and w.outcome(rid) is None
    for n in reversed(names[2:]):
        w.feed(m.RunnerStarted(n))
        w.feed(m.LaunchSettled(n))
        assert w.outcome(rid) is None
    w.feed(m.LaunchFailed(names[0]))
    assert w.outcome(rid) is None
    # A new configuration (the same tasks) while t01 is still starting.
    w.feed(m.ConfigChanged({n: spec() for n in names}, {n: w.m.tasks[n].state for n in names}))
    assert w.outcome(rid) is None
    w.feed(m.RunnerStarted(names[1]))
    assert w.outcome(rid) is None  # running, but its launch (after_start) is not over
    w.feed(m.LaunchSettled(names[1]))
    got = w.outcome(rid)
    assert got is not None
    assert got[names[0]][0] == "failed" and got[names[1]] == ("started", "")
    assert all(got[n] == ("started", "") for n in names[2:])
