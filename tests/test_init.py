"""``taskmux init``: proposals from each kind of project tree, a file ``check`` accepts, never
overwriting without --force, the questions on a terminal, and a Procfile project that runs."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

import pytest

from taskmuxctl.core import projectconfig as cfgmod
from tests.helpers import BIN, read, run_cli, run_json, wait_until
from tests.projects import status, wait_state


def write(folder: str, files: dict[str, str]) -> str:
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    return folder


def init(env: dict[str, str], folder: str, *extra: str) -> dict[str, object]:
    code, out = run_json(["init", "--defaults", *extra], env, cwd=folder)
    assert code == 0, out
    assert run_json(["check"], env, cwd=folder)[0] == 0  # what `taskmux check` accepts
    return out


def tasks_of(folder: str) -> dict[str, cfgmod.TaskConfig]:
    return cfgmod.load(os.path.join(folder, "taskmux.toml")).project.tasks


TREES = {
    "vite": ({"package.json": json.dumps({"scripts": {
        "dev": "vite", "build": "vite build", "storybook": "storybook dev -p 6006",
        "watch:css": "tailwindcss -w"}}), "pnpm-lock.yaml": ""},
        {"web": ("pnpm dev --port $PORT", "web", True),
         "storybook": ("pnpm storybook -p $PORT", "storybook", False),
         "watch-css": ("pnpm watch:css", None, False)}),
    "next-npm": ({"package.json": json.dumps({"scripts": {"dev": "next dev", "lint": "x"}})},
                 {"web": ("npm run dev -- --port $PORT", "web", True)}),
    "cra": ({"package.json": json.dumps({"scripts": {"start": "react-scripts start"}})},
            {"web": ("npm run start", "web", True)}),
    "plain-node": ({"package.json": json.dumps({"scripts": {"dev": "tsc --watch"}})},
                   {"web": ("npm run dev", None, True)}),
    "django": ({"manage.py": "", ".venv/bin/python": ""},
               {"web": (".venv/bin/python manage.py runserver 127.0.0.1:$PORT", "web", True)}),
    "django-and-vite": ({"manage.py": "", "uv.lock": "",
                         "package.json": json.dumps({"scripts": {"dev": "vite"}})},
                        {"api": ("uv run python manage.py runserver 127.0.0.1:$PORT", "api", True),
                         "web": ("npm run dev -- --port $PORT", "web", True)}),
    "compose": ({"docker-compose.yml": "services:\n  db:\n    image: postgres\n  cache:\n"
                 "    image: redis\nvolumes:\n  data: {}\n"},
                {"compose": ("docker compose -f docker-compose.yml up", None, True)}),
    "procfile": ({"Procfile": "web: bundle exec puma -p $PORT\nworker_1: sidekiq\n"
                  "release: rake db:migrate\n# a comment: no\n",
                  "package.json": json.dumps({"scripts": {"dev": "vite"}})},
                 {"web": ("bundle exec puma -p $PORT", "web", True),
                  "worker-1": ("sidekiq", None, True)}),
}


@pytest.mark.parametrize("kind", sorted(TREES))
def test_init_proposes_tasks_for_each_kind_of_tree(env: dict[str, str], tmp_path: str,
                                                   kind: str) -> None:
    files, expected = TREES[kind]
    folder = write(str(tmp_path / "shop"), files)
    out = init(env, folder)
    assert out["project"] == "shop"
    got = tasks_of(folder)
    assert {n: (t.command, t.host, t.auto_start) for n, t in got.items()} == expected
    assert out["tasks"] == list(expected)
    if kind == "compose":
        text = read(os.path.join(folder, "taskmux.toml"))
        assert "# services: db, cache" in text and got["compose"].stop_grace_period == 20


def test_an_empty_folder_gets_a_valid_file_with_an_example(env: dict[str, str],
                                                          tmp_path: str) -> None:
    folder = write(str(tmp_path / "Empty Thing"), {})
    out = init(env, folder)
    assert out["project"] == "empty-thing" and out["tasks"] == []
    assert "# [tasks.web]" in read(os.path.join(folder, "taskmux.toml"))


def test_never_overwrites_without_force(env: dict[str, str], tmp_path: str) -> None:
    folder = write(str(tmp_path / "app"), {"taskmux.toml": "name = \"mine\"\n",
                                           "Procfile": "web: python3 -m http.server $PORT\n"})
    code, out = run_json(["init", "--defaults"], env, cwd=folder)
    assert code == 1 and "already exists" in out["error"] and "--force" in out["error"]
    assert read(os.path.join(folder, "taskmux.toml")) == "name = \"mine\"\n"
    out = init(env, folder, "--force")
    assert read(os.path.join(folder, "taskmux.toml.bak")) == "name = \"mine\"\n"
    assert list(tasks_of(folder)) == ["web"]


def test_no_agent_context_writes_the_setting_and_no_agent_file(env: dict[str, str],
                                                               tmp_path: str) -> None:
    folder = write(str(tmp_path / "app"), {"Procfile": "web: x $PORT\n"})
    out = init(env, folder, "--no-agent-context")
    assert out["agent_files"] == []
    assert not os.path.exists(os.path.join(folder, "AGENTS.md"))
    loaded = cfgmod.load(os.path.join(folder, "taskmux.toml"))
    assert loaded.project.agent_context is False


def _answer(master: int, proc: subprocess.Popen[bytes], answers: list[tuple[bytes, bytes]]
            ) -> bytes:
    """Type each answer once its prompt shows on the terminal; return all that was shown."""
    seen = b""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        if answers and answers[0][0] in seen:
            os.write(master, answers.pop(0)[1])
    # What it wrote just before it exited is still in the terminal's buffer: read it all (the
    # loop above can see the exit first).
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_on_a_terminal_it_asks(env: dict[str, str], tmp_path: str) -> None:
    folder = write(str(tmp_path / "app"), {
        "Procfile": "web: python3 -m http.server $PORT\nworker: sleep 100\n"})
    master, slave = pty.openpty()
    proc = subprocess.Popen([f"{BIN}/taskmux", "init"], cwd=folder, env=env, stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        shown = _answer(master, proc, [(b"web: python3", b"\n"), (b"worker: sleep", b"n\n"),
                                       (b"Project name [app]", b"My Shop\n")])
        assert proc.wait(10) == 0, shown
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"https://web.app.localhost" in shown
    assert b"using 'my-shop'" in shown
    loaded = cfgmod.load(os.path.join(folder, "taskmux.toml"))
    assert loaded.name == "my-shop" and list(loaded.project.tasks) == ["web"]


def test_a_generated_procfile_project_runs(env: dict[str, str], tmp_path: str,
                                           daemon: object) -> None:
    folder = write(str(tmp_path / "demo"), {
        "Procfile": "web: python3 -m http.server $PORT --bind 127.0.0.1\n"
                    "worker: while true; do echo tick; sleep 0.2; done\n"})
    init(env, folder)
    assert run_json(["start"], env, cwd=folder)[0] == 0
    web = wait_state(env, folder, "web", "running")
    wait_state(env, folder, "worker", "running")
    assert web["port"] and web["url"].startswith("https://web.demo.localhost")

    def answers() -> bool:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{web['port']}/Procfile", timeout=2) as r:
            return b"worker" in r.read()

    wait_until(answers, 15, "the generated web task to serve on $PORT")
    wait_until(lambda: "tick" in run_cli(["logs", "worker"], env, cwd=folder).stdout, 15,
               "the worker's output")
    assert run_json(["stop"], env, cwd=folder)[0] == 0
    assert {t["state"] for t in status(env, folder)["tasks"]} == {"stopped"}
