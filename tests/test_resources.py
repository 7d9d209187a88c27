"""Resource figures per task: the readers, the arithmetic on a fake clock, and a real daemon
showing a child's 100 MB, a busy loop's CPU and a listening port."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from taskmuxd import proctree, resources
from taskmuxd.sampler import HISTORY, Meter, Reading, Target, read_all
from tests.helpers import run_cli, run_json, wait_until
from tests.projects import task, write_project

STAT = (b"4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
        b"150 50 0 0 20 0 3 0 98765 123456789 2560 18446744073709551615")


def test_parse_stat_reads_cpu_start_and_rss() -> None:
    proc = resources.parse_stat(STAT)
    assert proc is not None
    assert (proc.ppid, proc.start, proc.cpu_ticks) == (1, 98765, 200)
    assert proc.rss == 2560 * resources.PAGE
    assert resources.parse_stat(STAT.replace(b") S ", b") Z ")) is None
    assert resources.parse_stat(b"garbage") is None


def test_parse_net_keeps_listening_sockets_only() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 "
        "       0 55501 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000 "
        "       0 55502 1 0000000000000000 100 0 0 10 0\n"
        "   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 0 1 0000000000000000 100 0 0 10 0\n")
    assert resources.parse_net(text) == {55501: 8080}


def test_parse_rollup_and_ps() -> None:
    assert resources.parse_rollup(b"Rss:  100 kB\nPss:    2048 kB\n") == 2048 * 1024
    assert resources.parse_rollup(b"Rss: 1 kB\n") is None
    table = resources.parse_ps(" 10 1 0:01.50 2048\n 11 10 1-00:00:01 10\nbad line\n")
    assert table[10].ppid == 1 and table[10].rss == 2048 * 1024
    assert table[10].cpu_ticks == round(1.5 * resources.TICKS)
    assert table[11].cpu_ticks == (86400 + 1) * resources.TICKS


def _table(**procs: tuple[int, int, int]) -> resources.Table:
    """pid name 'pN' -> (ppid, cpu ticks, rss)."""
    return {int(k[1:]): resources.Proc(ppid, 7, ticks, rss)
            for k, (ppid, ticks, rss) in procs.items()}


def test_tree_sums_below_the_runner_and_cpu_is_per_interval() -> None:
    target = Target(("p", "t"), 1, runner_pid=10, pid=11)
    ticks = resources.TICKS
    meter = Meter()
    t0 = _table(p10=(1, 5, 1000), p11=(10, 0, 100), p12=(11, 0, 200), p99=(1, 0, 5))
    meter.apply([target], read_all([target], t0, False, {}), 100.0, 1000.0, False)
    fig = meter.get("p", "t")
    assert fig is not None and fig.cpu is None  # no interval yet
    assert fig.rss == 300 and fig.processes == 2  # the runner and strangers not counted
    # two seconds later: p11 used one second of CPU, p12 one more, and p13 appeared with half
    t1 = _table(p10=(1, 900, 1000), p11=(10, ticks, 100), p12=(11, ticks, 200),
                p13=(12, ticks // 2, 50))
    meter.apply([target], read_all([target], t1, False, {}), 102.0, 1002.0, False)
    assert fig.cpu == pytest.approx(125.0, abs=1)
    assert fig.rss == 350 and fig.processes == 3
    # the run ends: figures go, history stays
    meter.apply([], [], 103.0, 1003.0, False)
    assert fig.cpu is None and fig.rss == 0 and len(fig.history) == 2


def test_history_is_a_bounded_ring_and_a_new_run_resets_the_baseline() -> None:
    meter = Meter()
    table = _table(p10=(1, 0, 10), p11=(10, 0, 10))
    for i in range(HISTORY + 20):
        target = Target(("p", "t"), 1 if i < 5 else 2, runner_pid=10, pid=11)
        meter.apply([target], read_all([target], table, False, {}), float(i), float(i), False)
        fig = meter.get("p", "t")
        assert fig is not None
        if i == 5:
            assert fig.cpu is None  # first sample of run 2
    assert len(fig.history) == HISTORY


def test_cgroup_cpu_is_used_where_there_is_a_group() -> None:
    target = Target(("p", "t"), 1, runner_pid=10, pid=11, cgroup="/cg")
    table = _table(p10=(1, 0, 10), p11=(10, 0, 20), p40=(1, 0, 40))
    usage = iter([1_000_000, 1_500_000])

    def reading() -> list[Reading]:
        return read_all([target], table, False, {}, members=lambda _p: [10, 11, 40],
                        cg_cpu=lambda _p: next(usage))

    meter = Meter()
    meter.apply([target], reading(), 0.0, 0.0, False)
    meter.apply([target], reading(), 1.0, 1.0, False)
    fig = meter.get("p", "t")
    assert fig is not None and fig.cpu == pytest.approx(50.0)
    assert fig.rss == 60  # members but the runner (one that left the tree included)


def test_ports_are_read_only_when_something_changed() -> None:
    target = Target(("p", "t"), 1, runner_pid=10, pid=11)
    table = _table(p10=(1, 0, 10), p11=(10, 0, 20))
    asked: list[int] = []

    def sockets(pid: int) -> set[int]:
        asked.append(pid)
        return {501, 777}

    kw = {"listen": lambda: {501: 8080, 502: 9090}, "pss": lambda _p: 4096, "sockets": sockets}
    first = read_all([target], table, True, {}, **kw)  # type: ignore[arg-type]
    assert first[0].ports == [8080] and first[0].pss == 4096
    again = read_all([target], table, True, {("p", "t"): first[0].port_key},
                     **kw)  # type: ignore[arg-type]
    assert again[0].ports is None and asked == [11]


@pytest.mark.skipif(not proctree.AVAILABLE, reason="needs /proc (Linux)")
def test_real_scan_sees_this_process() -> None:
    table = resources.scan()
    me = table[os.getpid()]
    assert me.rss > 1 << 20 and me.ppid == os.getppid()
    own = resources.pss(os.getpid())
    if own is not None:  # smaps_rollup exists since Linux 4.14
        assert 0 < own <= me.rss * 2


ALLOC = ("import os, time\n"
         "buf = bytearray(100 * 1024 * 1024)\n"
         "for i in range(0, len(buf), 4096): buf[i] = 1\n"
         "time.sleep(600)\n")
BUSY = "while True: pass\n"
SERVE = ("import os, socket, time\n"
         "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
         "time.sleep(600)\n")


@pytest.mark.skipif(not proctree.AVAILABLE, reason="needs /proc (Linux)")
def test_daemon_reports_memory_cpu_and_ports(env: dict[str, str], tmp_path: str) -> None:
    folder = str(tmp_path / "p")
    os.makedirs(folder)
    for name, text in (("alloc.py", ALLOC), ("busy.py", BUSY), ("serve.py", SERVE)):
        with open(os.path.join(folder, name), "w") as fh:
            fh.write(text)
    py = sys.executable
    # the 100 MB live in a grandchild: sh -> sh -> python
    proj = write_project(folder, f"""
        name = "res"
        [tasks.mem]
        command = "sh -c '{py} alloc.py; true'"
        [tasks.spin]
        command = "{py} busy.py"
        [tasks.web]
        command = "{py} serve.py"
        port = "auto"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out

    def figures(name: str) -> dict[str, Any]:
        res = task(env, proj, name).get("resources") or {}
        assert isinstance(res, dict)
        return res

    def mem_shown() -> dict[str, Any] | None:
        r = figures("mem")
        return r if (r.get("rss") or 0) >= 100 << 20 else None

    def spin_shown() -> dict[str, Any] | None:
        r = figures("spin")
        return r if (r.get("cpu") or 0) >= 40 else None

    mem = wait_until(mem_shown, timeout=30, what="100 MB in the task's tree")
    assert mem["rss"] < 400 << 20
    assert wait_until(spin_shown, timeout=30, what="a busy loop near one core")["cpu"] <= 110
    run_cli(["stop", "spin"], env, cwd=proj)  # a spinning core slows every other test
    port = task(env, proj, "web")["port"]
    wait_until(lambda: port in figures("web")["ports"], timeout=30,
               what="the task's listening port")
    # text status has the columns; inspect carries the history
    text = run_cli(["status"], env, cwd=proj).stdout
    assert "CPU" in text.splitlines()[1] and "MEM" in text.splitlines()[1]
    assert any(line.split()[0] == "mem" and "M " in line for line in text.splitlines()[2:])
    code, out = run_json(["inspect", "mem"], env, cwd=proj)
    hist = out["task"]["resources"]["history"]
    assert len(hist["rss"]) >= 1 and max(hist["rss"]) >= 100 << 20
    wait_until(lambda: (figures("mem").get("pss") or 0) >= 90 << 20, timeout=30,
               what="PSS sampled")
    run_cli(["stop"], env, cwd=proj)
