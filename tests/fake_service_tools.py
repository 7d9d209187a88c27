"""Stand-ins for ``systemctl`` and ``launchctl`` (the machine's PID 1 is not systemd, and
launchd exists only on macOS): they record every call and really start and stop the daemon
the installed unit or plist names, so install is tested end to end up to the manager.

Usage (through wrapper scripts on PATH): ``fake_service_tools.py systemctl ARGS...``.
State lives in ``$FAKE_SERVICE_DIR`` (``state.json``, ``calls.log``); ``$FAKE_FAIL`` names
verbs that fail with "Access denied".
"""

from __future__ import annotations

import contextlib
import json
import os
import plistlib
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taskmuxctl.service.escape import systemd_split

DIR = os.environ["FAKE_SERVICE_DIR"]
ROOT = os.environ.get("TASKMUX_SERVICE_ROOT", "")


def load() -> dict[str, Any]:
    try:
        with open(os.path.join(DIR, "state.json")) as fh:
            return json.load(fh)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return {"enabled": {}, "pid": {}, "loaded": {}, "runs": {}, "exit": {}, "failed": {}}


def save(state: dict[str, Any]) -> None:
    with open(os.path.join(DIR, "state.json"), "w") as fh:
        json.dump(state, fh)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1][:1] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def spawn(program: list[str], env_home: str) -> tuple[int | None, int]:
    """Start the daemon as the unit would (detached here); return (pid, exit status)."""
    argv = program[: program.index("run")] if "run" in program else program
    log = os.path.join(env_home, "daemon.log")
    proc = subprocess.run([*argv, "run", "--detach", "--log-file", log],
                          env={**os.environ, "TASKMUX_HOME": env_home},
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
    out = proc.stdout.decode().strip()
    return (int(out) if proc.returncode == 0 and out.isdigit() else None), proc.returncode


def kill(pid: int | None) -> None:
    if not alive(pid):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


# -- systemctl ------------------------------------------------------------------------------

def unit_files(unit: str, user: bool) -> list[str]:
    if user:
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return [ROOT + os.path.join(config, "systemd", "user", unit)]
    base = ROOT + "/etc/systemd/system"
    name = unit.split("@", maxsplit=1)[0] + "@.service" if "@" in unit else unit
    return [os.path.join(base, name), os.path.join(base, unit + ".d", "taskmux.conf")]


def unit_settings(unit: str, user: bool) -> tuple[list[str], str | None]:
    program: list[str] = []
    home = None
    for path in unit_files(unit, user):
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            for line in fh:
                if line.startswith("ExecStart="):
                    program = systemd_split(line[len("ExecStart="):].strip())
                if line.startswith("Environment="):
                    for word in systemd_split(line[len("Environment="):].strip()):
                        key, _, value = word.partition("=")
                        if key == "TASKMUX_HOME":
                            home = value
    return program, home


def systemctl(args: list[str]) -> int:
    user = args[:1] == ["--user"]
    if user:
        args = args[1:]
    verb, rest = args[0], args[1:]
    state = load()
    if verb in os.environ.get("FAKE_FAIL", "").split(","):
        print("Failed: Access denied", file=sys.stderr)
        return 1
    unit = next((a for a in rest if not a.startswith("-")), "")
    if verb in ("daemon-reload", "reset-failed"):
        state["failed"].pop(unit, None)
    elif verb == "enable":
        state["enabled"][unit] = True
    elif verb == "disable":
        state["enabled"][unit] = False
        if "--now" in rest:
            kill(state["pid"].pop(unit, None))
    elif verb in ("start", "restart"):
        if verb == "restart":
            kill(state["pid"].pop(unit, None))
        if not alive(state["pid"].get(unit)):
            program, home = unit_settings(unit, user)
            pid, code = spawn(program, home or os.environ["TASKMUX_HOME"])
            state["runs"][unit] = state["runs"].get(unit, 0) + 1
            if pid is None:
                state["failed"][unit] = True
                state["exit"][unit] = code
                save(state)
                print(f"Job for {unit} failed because the control process exited with error "
                      "code.", file=sys.stderr)
                return 1
            state["pid"][unit] = pid
    elif verb == "stop":
        kill(state["pid"].pop(unit, None))
    elif verb == "show":
        loaded = os.path.exists(unit_files(unit, user)[0])
        pid = state["pid"].get(unit)
        running = alive(pid)
        code = state["exit"].get(unit)
        print(f"LoadState={'loaded' if loaded else 'not-found'}")
        print("ActiveState=" + ("active" if running else
                                "failed" if state["failed"].get(unit) else "inactive"))
        print(f"SubState={'running' if running else 'dead'}")
        print("UnitFileState=" + ("enabled" if state["enabled"].get(unit) else
                                  "disabled" if loaded else ""))
        print(f"MainPID={pid if running else 0}")
        print("NRestarts=0")  # systemd counts automatic restarts only; the fake makes none
        print(f"ExecMainCode={1 if code is not None else 0}")
        print(f"ExecMainStatus={code if code is not None else 0}")
        print(f"ExecMainExitTimestamp={'Thu 2026-01-01 00:00:00 UTC' if code else ''}")
        return 0
    else:
        print(f"fake systemctl: unknown verb {verb}", file=sys.stderr)
        return 1
    save(state)
    return 0


# -- launchctl ------------------------------------------------------------------------------

def launchctl(args: list[str]) -> int:
    verb, rest = args[0], args[1:]
    state = load()
    if verb in os.environ.get("FAKE_FAIL", "").split(","):
        print("Operation not permitted", file=sys.stderr)
        return 1
    if verb == "print-disabled":
        print("disabled services = {")
        for label, enabled in state["enabled"].items():
            print(f'\t"{label.split("/")[-1]}" => {"enabled" if enabled else "disabled"}')
        print("}")
        return 0
    if verb == "bootstrap":
        domain, plist = rest
        with open(plist, "rb") as fh:
            job = plistlib.load(fh)
        service = f"{domain}/{job['Label']}"
        if state["loaded"].get(service):
            print("Bootstrap failed: 5: Input/output error", file=sys.stderr)
            return 5
        state["loaded"][service] = plist
        start_job(state, service)
    else:
        service = rest[-1]
        loaded = state["loaded"].get(service)
        if verb == "print":
            if not loaded:
                print(f'Could not find service "{service}"', file=sys.stderr)
                return 113
            pid = state["pid"].get(service)
            code = state["exit"].get(service)
            print(f"{service} = {{")
            print(f"\tstate = {'running' if alive(pid) else 'not running'}")
            if alive(pid):
                print(f"\tpid = {pid}")
            print(f"\truns = {state['runs'].get(service, 0)}")
            print(f"\tlast exit code = {code if code is not None else '(never exited)'}")
            print("\tendpoints = {\n\t\tstate = active\n\t}")
            print("}")
            return 0
        if verb == "enable":
            state["enabled"][service] = True
        elif verb == "bootout":
            if not loaded:
                print("Boot-out failed: 3: No such process", file=sys.stderr)
                return 3
            kill(state["pid"].pop(service, None))
            del state["loaded"][service]
        elif verb == "kickstart":
            if not loaded:
                return 113
            if "-k" in rest:
                kill(state["pid"].pop(service, None))
            if not alive(state["pid"].get(service)):
                start_job(state, service)
        else:
            print(f"fake launchctl: unknown verb {verb}", file=sys.stderr)
            return 1
    save(state)
    return 0


def start_job(state: dict[str, Any], service: str) -> None:
    with open(state["loaded"][service], "rb") as fh:
        job = plistlib.load(fh)
    pid, code = spawn(job["ProgramArguments"], job["EnvironmentVariables"]["TASKMUX_HOME"])
    state["runs"][service] = state["runs"].get(service, 0) + 1
    if pid is None:
        state["exit"][service] = code
    else:
        state["pid"][service] = pid


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    with open(os.path.join(DIR, "calls.log"), "a") as fh:
        fh.write(" ".join([tool, *args]) + "\n")
    with contextlib.suppress(BrokenPipeError):
        return systemctl(args) if tool == "systemctl" else launchctl(args)
    return 1


if __name__ == "__main__":
    sys.exit(main())
