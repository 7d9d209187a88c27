"""How long an update takes, from `taskmuxctl update` to the new daemon answering, with tasks
running in tmux throughout (none may be restarted). Target: under 10 s.

Run by hand: `.venv/bin/python bench/update_speed.py [--runs N]`. It builds releases of this
checkout with bumped versions, serves them from a loopback stand-in for GitHub Releases (so the
download is local: "the package already downloaded"), installs dependencies from a local
wheelhouse (no index), and runs each update twice over: with the daemon started directly, and
under a stand-in service manager (the daemon exits 75, the manager starts the boot-guard).
Phases come from the update's own events in events.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from bench.common import kill_tmux  # noqa: E402
from taskmuxctl.core.eventlog import read_events  # noqa: E402
from taskmuxctl.core.paths import Paths  # noqa: E402
from taskmuxctl.core.timefmt import parse_stamp  # noqa: E402
from taskmuxctl.core.update import bootguard  # noqa: E402
from taskmuxctl.core.update.install import create_version, install_guard  # noqa: E402
from taskmuxctl.core.update.layout import AppLayout  # noqa: E402
from taskmuxctl.core.update.restart import daemon_version  # noqa: E402
from tests.fakegithub import FakeGitHub, public_key_text  # noqa: E402
from tests.update_fixtures import copy_source, dependency_wheelhouse, load_release_script  # noqa: E402

PHASES = [("check + download + verify", "update_available", "update_verified"),
          ("venv + pip install", "update_installing", "update_preflight_passed"),
          ("switch + restart + answer", "update_switched", "update_confirmed")]


def build_wheels(versions: list[str], work: str) -> dict[str, str]:
    script = load_release_script()
    out = os.path.join(work, "wheels")
    os.makedirs(out)
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    wheels = {}
    for v in versions:
        wheels[v] = script.build_wheel(copy_source(os.path.join(work, "src", v), v), out,
                                       isolation=False)
    return wheels


def wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def run_mode(mode: str, versions: list[str], wheels: dict[str, str], wheelhouse: str,
             work: str) -> list[dict[str, Any]]:
    home = tempfile.mkdtemp(prefix="tmxu-", dir="/tmp")
    sock = f"tmxbench-{uuid.uuid4().hex[:8]}"
    key = Ed25519PrivateKey.generate()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKMUX_", "PIP_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update({"TASKMUX_HOME": home, "TASKMUX_TMUX_SOCKET": sock, "PIP_NO_INDEX": "1",
                "PIP_FIND_LINKS": wheelhouse, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    os.environ.update({"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse})
    paths = Paths(home)
    layout = AppLayout(paths)
    layout.ensure()
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    base = versions[0]
    create_version(paths, layout, base, wheels[base], python)
    layout.mark_complete(base, "bench")
    bootguard.set_link(layout.app, "current", base)
    layout.write_python(python)
    install_guard(layout, base)
    service = None
    results = []
    with FakeGitHub() as gh:
        with open(paths.config, "w") as fh:
            fh.write(f'release_url = "{gh.channel}"\ntrusted_keys = ["{public_key_text(key)}"]\n')
        ctl = os.path.join(layout.app, "current", "bin", "taskmuxctl")
        try:
            if mode == "service":
                service = subprocess.Popen(
                    [sys.executable, os.path.join(ROOT, "tests", "fake_service.py"), "--record",
                     os.path.join(home, "starts"), "--", python, layout.guard_script, "--home",
                     home, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True)
            else:
                subprocess.run([ctl, "daemon", "start"], env=env, check=True,
                               capture_output=True)
            wait(lambda: daemon_version(paths) == base, 30, "the daemon")
            proj = os.path.join(work, f"proj-{mode}")
            os.makedirs(proj)
            with open(os.path.join(proj, "taskmux.toml"), "w") as fh:
                fh.write(textwrap.dedent("""
                    name = "bench"
                    [tasks.a]
                    command = "sleep 3600"
                    [tasks.b]
                    command = "sleep 3600"
                """))
            subprocess.run([ctl, "--json", "start"], env=env, cwd=proj, check=True,
                           capture_output=True)

            def pids() -> dict[str, Any]:
                out = subprocess.run([ctl, "--json", "status"], env=env, cwd=proj,
                                     capture_output=True, text=True).stdout
                return {t["name"]: t["pid"] for t in json.loads(out)["tasks"]}

            before = wait(lambda: (p := pids()) and all(p.values()) and p, 30, "the tasks")
            for version in versions[1:]:
                gh.publish(version, wheels[version], key)
                started = time.time()
                t0 = time.perf_counter()
                proc = subprocess.run([ctl, "--json", "update"], env=env, capture_output=True,
                                      text=True)
                answered = time.perf_counter() - t0
                if proc.returncode != 0 or daemon_version(paths) != version:
                    raise RuntimeError(f"update to {version} failed: {proc.stdout}{proc.stderr}")
                events = [e for e in read_events(paths.events)
                          if (parse_stamp(str(e.get("time"))) or 0) >= started - 0.01]
                at = {e["event"]: parse_stamp(str(e["time"])) for e in events}
                restarted = [e for e in events if e["event"] in
                             ("task_started", "task_restarted", "task_stopped", "task_exited")]
                after = pids()
                results.append({"mode": mode, "version": version, "total": answered,
                                "phases": {name: (at[b] or 0) - (at[a] or 0)
                                           for name, a, b in PHASES},
                                "tasks_kept": after == before and not restarted})
                ctl = os.path.join(layout.app, "current", "bin", "taskmuxctl")
        finally:
            if service is not None:
                service.send_signal(signal.SIGTERM)
                service.wait(30)
            else:
                subprocess.run([ctl, "daemon", "stop"], env=env, capture_output=True)
            kill_tmux(sock)
            shutil.rmtree(home, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="updates per mode")
    args = parser.parse_args()
    versions = ["1.0.0", *[f"1.0.{i}" for i in range(1, args.runs + 1)]]
    work = tempfile.mkdtemp(prefix="tmxbench-update-")
    try:
        wheels = build_wheels(versions, work)
        wheelhouse = dependency_wheelhouse(wheels["1.0.0"])
        rows = []
        for mode in ("direct", "service"):
            rows += run_mode(mode, versions, wheels, wheelhouse, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(rows)} updates, 2 tasks running in tmux throughout (target: under 10 s)")
    for mode in ("direct", "service"):
        mine = [r for r in rows if r["mode"] == mode]
        totals = [r["total"] for r in mine]
        print(f"  {mode:<8} update -> new daemon answering: median {statistics.median(totals):.2f}"
              f" s (min {min(totals):.2f}, max {max(totals):.2f}); tasks kept their pids and "
              f"were never restarted: {all(r['tasks_kept'] for r in mine)}")
        for name, _, _ in PHASES:
            values = [r["phases"][name] for r in mine]
            print(f"      {name:<28} median {statistics.median(values):.2f} s")


if __name__ == "__main__":
    main()
