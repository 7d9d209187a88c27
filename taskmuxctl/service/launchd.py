"""The door to launchd: ``launchctl`` with the bootstrap/bootout/kickstart verbs."""

from __future__ import annotations

from taskmuxctl.service.manager import ServiceState, Tool, describe_exit

NOT_LOADED = (3, 5, 36, 113)  # "No such process", "Input/output error", "Could not find"


def parse_print(text: str) -> ServiceState:
    """A ServiceState from ``launchctl print DOMAIN/LABEL``: the job's own ``key = value``
    lines (one tab deep; nested dictionaries have keys of their own)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("\t") or line.startswith("\t\t"):
            continue
        key, sep, value = line.strip().partition(" = ")
        if sep and key not in props:
            props[key] = value.strip()
    pid = props.get("pid", "")
    runs = props.get("runs", "")
    code = props.get("last exit code", "")
    last_exit = None
    if code.lstrip("-").isdigit():
        status = int(code)
        # Negative: the job was killed by that signal.
        last_exit = describe_exit("killed", -status) if status < 0 else \
            describe_exit("exited", status)
    state = props.get("state", "unknown")
    return ServiceState(
        loaded=True,
        active=state == "running",
        state=state,
        main_pid=int(pid) if pid.isdigit() else None,
        restarts=max(int(runs) - 1, 0) if runs.isdigit() else None,
        last_exit=last_exit,
    )


def parse_disabled(text: str, label: str) -> bool:
    """Is ``label`` disabled in ``launchctl print-disabled DOMAIN`` output?"""
    for line in text.splitlines():
        key, sep, value = line.strip().partition(" => ")
        if sep and key.strip('"') == label:
            return value.strip() in ("disabled", "true")
    return False


class Launchd:
    name = "launchd"

    def __init__(self, label: str, domain: str, plist: str,
                 env: dict[str, str] | None = None) -> None:
        self.unit = label
        self.domain = domain
        self.plist = plist
        self.service = f"{domain}/{label}"
        self.tool = Tool(["launchctl"], env)

    @property
    def actions(self) -> list[str]:
        return self.tool.actions

    def state(self) -> ServiceState:
        done = self.tool.query("print", self.service)
        if done.returncode != 0:
            state = ServiceState(loaded=False, state="not loaded")
        else:
            state = parse_print(done.stdout)
        disabled = self.tool.query("print-disabled", self.domain)
        state.enabled = disabled.returncode == 0 and not parse_disabled(disabled.stdout,
                                                                        self.unit)
        return state

    def reload(self) -> None:
        """launchd reads a property list when it loads the job: unload it so that the next
        start loads the new one."""
        if self.state().loaded:
            self.tool.change("bootout", self.service, ok=(0, *NOT_LOADED))

    def enable(self) -> None:
        self.tool.change("enable", self.service)

    def start(self) -> None:
        if self.state().loaded:
            self.tool.change("kickstart", self.service)
        else:
            self.tool.change("bootstrap", self.domain, self.plist)  # RunAtLoad starts it

    def stop(self) -> None:
        # Unloading is launchd's stop: a SIGTERM alone would count as a failed exit and
        # KeepAlive would start the daemon again.
        if self.state().loaded:
            self.tool.change("bootout", self.service, ok=(0, *NOT_LOADED))

    def restart(self) -> None:
        if self.state().loaded:
            self.tool.change("kickstart", "-k", self.service)
        else:
            self.tool.change("bootstrap", self.domain, self.plist)

    def remove(self) -> None:
        self.stop()

    def forget(self) -> None:
        pass

    def logs_hint(self) -> str:
        return f"launchctl print {self.service}"
