"""Small truths in what status and health print: every column has a header, and a stopped
task nobody asked to run is not counted as unhealthy."""

from __future__ import annotations

from tests.helpers import run_cli, run_json, wait_until
from tests.projects import wait_state, write_project


def test_status_headers_and_health_counts(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "counts"
        [tasks.app]
        command = "sleep 600"
        health_check = "true"
        health_interval = 0.2
        health_grace = 0
        [tasks.manual]
        command = "sleep 600"
        auto_start = false
        [tasks.gone]
        command = "sleep 0.5; exit 3"
        restart_policy = "no"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    wait_state(env, proj, "gone", "exited")
    out = wait_until(lambda: (h := run_json(["health"], env, cwd=proj)[1])["healthy_count"] == 1
                     and h, 10, "app to be healthy")
    # manual is stopped and was never meant to run: left out; gone exited: counted.
    assert (out["healthy_count"], out["total_count"], out["not_counted"]) == (1, 2, 1)
    rows = {t["name"]: t for t in out["tasks"]}
    assert not rows["manual"]["counted"] and rows["gone"]["counted"]
    text = run_cli(["health"], env, cwd=proj).stdout
    assert text.startswith("1/2 healthy (1 stopped task not meant to run, not counted)\n")
    # A task stopped by the user is not meant to run either.
    assert run_json(["stop", "app"], env, cwd=proj)[0] == 0
    out = run_json(["health"], env, cwd=proj)[1]
    assert (out["total_count"], out["not_counted"]) == (1, 2)

    status = run_cli(["status"], env, cwd=proj).stdout.splitlines()
    header = next(line for line in status if line.strip().startswith("TASK"))
    assert header.split()[-1] == "NOTES"
    notes_at = header.index("NOTES")
    app = next(line for line in status if line.strip().startswith("app "))
    assert app[notes_at:].strip() == "stopped by you"
