"""A fake systemctl/launchctl on PATH (see fake_service_tools.py) and helpers to read what
they were asked to do."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tests.helpers import PYTHON, REPO

TOOLS = os.path.join(REPO, "tests", "fake_service_tools.py")
QUERIES = {"show", "print", "print-disabled"}


@dataclass
class FakeManager:
    dir: str
    root: str
    env: dict[str, str]

    def calls(self) -> list[str]:
        try:
            with open(os.path.join(self.dir, "calls.log")) as fh:
                return [line.rstrip("\n") for line in fh]
        except FileNotFoundError:
            return []

    def changes(self) -> list[str]:
        """The calls that change something (queries left out), in order."""
        out = []
        for call in self.calls():
            words = call.split()
            verb = words[2] if words[1:2] == ["--user"] else words[1]
            if verb not in QUERIES:
                out.append(call)
        return out

    def reset_calls(self) -> None:
        open(os.path.join(self.dir, "calls.log"), "w").close()


def make_fake_manager(base: str, env: dict[str, str], manager: str = "systemd"
                      ) -> FakeManager:
    bin_dir = os.path.join(base, "bin")
    root = os.path.join(base, "root")
    os.makedirs(bin_dir)
    os.makedirs(root)
    for tool in ("systemctl", "launchctl"):
        path = os.path.join(bin_dir, tool)
        with open(path, "w") as fh:
            fh.write(f'#!/bin/sh\nexec "{PYTHON}" "{TOOLS}" {tool} "$@"\n')
        os.chmod(path, 0o755)
    full = {**env, "PATH": f"{bin_dir}:{env.get('PATH', '')}", "FAKE_SERVICE_DIR": base,
            "TASKMUX_SERVICE_ROOT": root, "TASKMUX_SERVICE_MANAGER": manager,
            "XDG_CONFIG_HOME": os.path.join(base, "config")}
    return FakeManager(base, root, full)
