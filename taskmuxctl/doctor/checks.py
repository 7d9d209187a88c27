"""Doctor's checks: pure functions from gathered facts to a verdict with a fix hint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskmuxctl.core import diskspace
from taskmuxctl.doctor.facts import ABSENT, Facts

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"

# 3.2a: what Debian 11 and Ubuntu 22.04 ship, the oldest systems taskmux supports (and the
# oldest tmux its tests run against).
TMUX_MINIMUM = (3, 2, "a")
PYTHON_MINIMUM = (3, 11)
LOOPBACK = ("127.", "::1")


@dataclass
class Check:
    name: str
    status: str
    summary: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary,
                "hint": self.hint}


def parse_tmux_version(text: str) -> tuple[int, int, str] | None:
    """``tmux 3.3a`` -> (3, 3, "a"); ``tmux next-3.4`` -> (3, 4, ""); development and
    OpenBSD builds (``tmux master``, ``tmux openbsd-7.4``) count as the newest."""
    word = text.strip().split()[-1] if text.strip() else ""
    if word in ("master",) or word.startswith("openbsd-"):
        return (999, 0, "")
    word = word.removeprefix("next-")
    major, _, rest = word.partition(".")
    digits = "".join(c for c in rest if c.isdigit())
    letter = rest[len(digits):]
    if not major.isdigit() or not digits:
        return None
    return int(major), int(digits), letter


def check_tmux(f: Facts) -> Check:
    install = "install tmux 3.2a or newer (apt install tmux, dnf install tmux, brew install tmux)"
    if f.tmux_path is None:
        return Check("tmux", FAIL, "tmux is not on PATH", install)
    if f.tmux_version is None:
        return Check("tmux", FAIL, f"{f.tmux_path} -V failed: {f.tmux_error}", install)
    version = parse_tmux_version(f.tmux_version)
    if version is None:
        return Check("tmux", WARN, f"cannot read the version of {f.tmux_path} "
                     f"({f.tmux_version.strip()!r}); 3.2a or newer is needed", install)
    if version < TMUX_MINIMUM:
        return Check("tmux", FAIL, f"{f.tmux_version.strip()} at {f.tmux_path} is too old; "
                     "taskmux needs 3.2a or newer", install)
    return Check("tmux", OK, f"{f.tmux_version.strip()} ({f.tmux_path}); 3.2a or newer is "
                 "supported")


def check_python(f: Facts) -> Check:
    version = ".".join(map(str, f.python_version))
    if f.python_version[:2] < PYTHON_MINIMUM:
        return Check("python", FAIL, f"Python {version} ({f.python_executable}) is too old; "
                     "taskmux needs 3.11 or newer", "reinstall taskmux with Python 3.11+")
    summary = f"Python {version} ({f.python_executable}), taskmux {f.client_version}"
    if f.installed_version is None:
        return Check("python", WARN, f"{summary}; the taskmux package metadata is missing",
                     "reinstall taskmux (pip install taskmux, or pip install -e . in a "
                     "checkout)")
    if f.installed_version != f.client_version:
        return Check("python", WARN, f"{summary}, but the installed metadata says "
                     f"{f.installed_version}", "reinstall taskmux so both agree")
    return Check("python", OK, summary)


def check_state_dir(f: Facts) -> Check:
    path = f.state_dir
    if not f.state_exists:
        return Check("state", WARN, f"{path} does not exist yet",
                     "it is created when the daemon first starts: taskmux daemon start")
    if not f.state_is_dir:
        return Check("state", FAIL, f"{path} is not a directory",
                     "move it away; taskmux needs a directory there (or set TASKMUX_HOME)")
    if f.state_uid != f.my_uid:
        return Check("state", FAIL, f"{path} belongs to uid {f.state_uid}, not to you "
                     f"({f.my_user}, uid {f.my_uid})",
                     f"sudo chown -R {f.my_user} {_q(path)}")
    if f.state_mode is not None and f.state_mode & 0o077:
        return Check("state", FAIL, f"{path} is mode {f.state_mode:04o}: others can read it",
                     f"chmod 700 {_q(path)}")
    if f.foreign_entries:
        names = ", ".join(f.foreign_entries[:5])
        return Check("state", FAIL, f"{path} holds files you do not own: {names}",
                     f"sudo chown -R {f.my_user} {_q(path)}")
    return Check("state", OK, f"{path}: yours, mode 0700")


def check_disk(f: Facts) -> Check:
    """The state directory's file system: full (writes fail), nearly full, or fine."""
    d = f.disk
    if d is None or d.get("free") is None:
        return Check("disk", SKIP, f"cannot read the free space of {f.state_dir}")
    free, total, mount = int(d["free"]), int(d["total"] or 0), d["mount"]
    amount = f"{diskspace.size(free)} free of {diskspace.size(total)} on {mount}"
    section = (f.daemon_status or {}).get("disk")
    dropped = section.get("events_dropped", 0) if isinstance(section, dict) else 0
    hint = (f"free space on {mount} (`df -h {_q(mount)}`; old task logs are under "
            f"{_q(f.state_dir)}/projects/*/logs); taskmux carries on by itself once there "
            "is room")
    if d.get("full") or dropped:
        lost = f"; the daemon has dropped {dropped} event(s) so far" if dropped else ""
        return Check("disk", FAIL, f"the disk holding {f.state_dir} is full ({amount}): "
                     f"events, state and task log lines cannot be written{lost}", hint)
    if total and free < total * diskspace.LOW_FRACTION and free < diskspace.LOW_BELOW:
        return Check("disk", WARN, f"the disk holding {f.state_dir} is nearly full "
                     f"({amount})", hint)
    return Check("disk", OK, amount)


def check_socket(f: Facts) -> Check:
    if f.socket_problem:
        return Check("socket", FAIL, f.socket_problem,
                     "set TASKMUX_HOME to a shorter directory")
    if not f.socket_exists:
        if f.daemon_status is None:
            return Check("socket", SKIP, f"no socket at {f.socket_path} (the daemon is not "
                         "running)")
        return Check("socket", FAIL, f"{f.socket_path} is missing while the daemon runs",
                     "taskmux daemon restart")
    if not f.socket_is_socket:
        return Check("socket", FAIL, f"{f.socket_path} is not a socket",
                     f"remove it (rm {_q(f.socket_path)}) and start the daemon")
    if f.my_uid not in (f.socket_uid, 0):
        return Check("socket", FAIL, f"{f.socket_path} belongs to uid {f.socket_uid}",
                     "run taskmux as that user, or set TASKMUX_HOME to your own directory")
    if f.socket_mode is not None and f.socket_mode & 0o077:
        return Check("socket", FAIL, f"{f.socket_path} is mode {f.socket_mode:04o}",
                     "taskmux daemon restart (the daemon creates it 0600)")
    if f.daemon_status is None:
        return Check("socket", FAIL, f"{f.socket_path} exists but nobody answers on it",
                     "taskmux daemon start (the stale socket is replaced)")
    return Check("socket", OK, f"{f.socket_path} (0600)")


def check_daemon(f: Facts) -> Check:
    if f.daemon_status is None:
        if f.daemon_pid is not None:
            return Check("daemon", FAIL, f"pid {f.daemon_pid} runs but does not answer: "
                         f"{f.daemon_error}", "taskmux daemon restart; see the daemon log")
        return Check("daemon", FAIL, "not running",
                     "taskmux daemon start (or taskmux daemon install to run it as a service)")
    version = f.daemon_status.get("version")
    pid = f.daemon_status.get("pid")
    if version != f.client_version:
        return Check("daemon", FAIL, f"pid {pid} runs version {version}, this client is "
                     f"{f.client_version}", "taskmux daemon restart")
    return Check("daemon", OK, f"pid {pid}, version {version}, answering")


def check_service(f: Facts) -> Check:
    if f.service is None:
        return Check("service", WARN, "not installed: the daemon runs only while something "
                     "starts it", "taskmux daemon install (starts it at boot, restarts it on "
                     "failure)")
    unit = f.service.get("unit")
    if f.service_state is None:
        return Check("service", FAIL, f"{unit}: cannot ask {f.service.get('manager')}: "
                     f"{f.service_error}", "check that the service manager runs")
    state = f.service_state
    if not state.get("loaded") and f.service.get("manager") == "systemd":
        return Check("service", FAIL, f"{unit} is not known to systemd",
                     "taskmux daemon install")
    if not state.get("enabled"):
        return Check("service", FAIL, f"{unit} is not enabled: it will not start at boot",
                     "taskmux daemon install")
    if not state.get("active"):
        last = state.get("last_exit")
        return Check("service", FAIL, f"{unit} is {state.get('state')}"
                     + (f" (last exit: {last})" if last else ""), "taskmux daemon start")
    pid = (f.daemon_status or {}).get("pid")
    if pid is not None and state.get("main_pid") not in (None, pid):
        return Check("service", FAIL, f"the daemon answering (pid {pid}) is not the one "
                     f"{unit} runs (pid {state.get('main_pid')})",
                     "taskmux daemon restart")
    restarts = state.get("restarts")
    extra = f", {restarts} automatic restarts" if restarts else ""
    return Check("service", OK, f"{unit} ({f.service.get('manager')}): enabled, "
                 f"{state.get('state')}{extra}")


def check_service_files(f: Facts) -> Check:
    if f.service is None:
        return Check("service-files", SKIP, "no service installed")
    missing = [p for p, (disk, _) in f.unit_files.items() if disk is None]
    if missing:
        return Check("service-files", FAIL, f"missing: {', '.join(missing)}",
                     "taskmux daemon install")
    stale = [p for p, (disk, now) in f.unit_files.items() if disk != now]
    if stale:
        return Check("service-files", FAIL, f"{', '.join(stale)} differs from what this "
                     "version of taskmux writes", "taskmux daemon install (rewrites it and "
                     "restarts the daemon)")
    program = " ".join(f.exec_program or [])
    if not f.exec_program_ok:
        return Check("service-files", FAIL, f"the service runs {program or '(nothing)'}, "
                     "which does not exist or cannot run", "taskmux daemon install")
    return Check("service-files", OK, f"up to date; runs {program}")


def check_service_code(f: Facts) -> Check:
    """A system service's program runs as root: no user may be able to change it (a unit
    written by an older taskmux may start a boot-guard or virtualenv in a user's home)."""
    name = "service-code"
    if f.service is None:
        return Check(name, SKIP, "no service installed")
    if f.service.get("scope") != "system":
        return Check(name, SKIP, "a per-user service runs as its user, never as root")
    unit, user = f.service.get("unit"), f.service.get("user")
    if f.root_program is None:
        return Check(name, SKIP, f"cannot read the program {unit} runs from "
                     f"{f.service.get('unit_file')}")
    program = " ".join(f.root_program)
    if f.root_code_error:
        return Check(name, WARN, f"cannot examine what {unit} runs as root ({program}): "
                     f"{f.root_code_error}", "run the check as root: sudo taskmux doctor")
    if f.root_code_problem:
        return Check(
            name, FAIL, f"{unit} runs {program} as root, but {f.root_code_problem}: a user "
            "could change what root runs at the service's next start",
            "install taskmux where only root can change it (a root-owned virtualenv or a "
            "system package) and run that copy's `sudo taskmux daemon install --system --user "
            f"{user}`, which points the service at it; or switch to a per-user service: "
            f"`sudo taskmux daemon uninstall --system --user {user}`, then, as {user}, "
            "`taskmux daemon install --user-unit`")
    what = "it and this installation's packages" if f.root_packages_checked else \
        "it (the packages of that other installation were not checked)"
    return Check(name, OK, f"root runs {program}; only root can change {what}")


def _section(f: Facts, value: dict[str, Any] | str | None, name: str
             ) -> Check | dict[str, Any]:
    if f.daemon_status is None:
        return Check(name, SKIP, "the daemon is not answering")
    if value == ABSENT or not isinstance(value, dict):
        return Check(name, WARN, "not available in this version of the daemon")
    return value


def check_proxy(f: Facts) -> Check:
    sec = _section(f, f.proxy, "proxy")
    if isinstance(sec, Check):
        return sec
    from taskmuxctl.core.humanize import fix_plurals

    summary = fix_plurals(sec.get("summary") or "")  # the daemon writes "N projects" for any N
    if not sec.get("enabled"):
        return Check("proxy", OK, summary or "disabled in the settings")
    if not sec.get("bound"):
        return Check("proxy", FAIL, f"not listening: {sec.get('error') or summary}",
                     "free the ports (or change them with taskmux config set), then "
                     "taskmux daemon restart")
    return Check("proxy", OK, summary or f"listening on :{sec.get('https_port')} and "
                 f":{sec.get('redirect_port')}")


def _loopback(addresses: list[str] | None) -> bool:
    return bool(addresses) and all(a.startswith(LOOPBACK) for a in addresses or [])


def check_dns(f: Facts) -> Check:
    sec = _section(f, f.dns, "dns")
    if isinstance(sec, Check):
        return sec
    resolver = sec.get("resolver")
    if resolver == "noop":
        if _loopback(f.dns_system):
            return Check("dns", OK, f"host_resolver = noop; this machine resolves {f.dns_name} "
                         f"to {', '.join(f.dns_system or [])} by itself")
        return Check("dns", WARN, "host_resolver = noop: taskmux leaves name resolution to "
                     f"you, and {f.dns_name} does not resolve here",
                     "set host_resolver = \"dns_server\" or \"etc_hosts\" "
                     "(taskmux config set host_resolver dns_server)")
    if resolver == "etc_hosts":
        if sec.get("error"):
            return Check("dns", FAIL, str(sec["error"]),
                         "sudo taskmux dns install, or run the daemon as a system service")
        missing = sec.get("missing") or []
        if missing:
            return Check("dns", FAIL, f"{len(missing)} task name(s) are missing from "
                         f"{sec.get('hosts_file')}: {', '.join(missing[:3])}",
                         "sudo taskmux dns install")
        return Check("dns", OK, str(sec.get("summary") or "hosts block up to date"))
    if not sec.get("bound", sec.get("serving")):
        return Check("dns", FAIL, f"not serving: {sec.get('error') or sec.get('summary')}",
                     "see taskmux daemon status; taskmux daemon restart")
    if f.dns_direct is not None and not _loopback(f.dns_direct):
        return Check("dns", FAIL, f"the daemon's DNS server answered {f.dns_name} with "
                     f"{f.dns_direct or 'nothing'}", "taskmux daemon restart")
    if f.dns_direct_error:
        return Check("dns", FAIL, f"the daemon's DNS server (port {sec.get('port')}) did not "
                     f"answer: {f.dns_direct_error}", "taskmux daemon restart")
    if not _loopback(f.dns_system):
        got = f.dns_system_error or ", ".join(f.dns_system or []) or "nothing"
        return Check("dns", FAIL, f"this machine's resolver does not send {f.dns_name} to "
                     f"loopback ({got}); resolver: {resolver}",
                     "sudo taskmux dns install (sets the system resolver to send .localhost "
                     "to taskmux's server)")
    return Check("dns", OK, f"{f.dns_name} resolves to {', '.join(f.dns_system or [])}")


def check_ca(f: Facts) -> Check:
    if f.daemon_status is None:
        return Check("ca", SKIP, "the daemon is not answering")
    if f.ca == ABSENT:
        return Check("ca", WARN, "not available in this version of the daemon")
    if not isinstance(f.ca, dict):
        return Check("ca", FAIL, f"ca.status failed: {f.ca_error}", "taskmux daemon restart")
    if not f.ca.get("exists"):
        return Check("ca", WARN, f"no local CA at {f.ca.get('path')} yet (it is made when a "
                     "task with a host first starts)", "taskmux ca install")
    if f.ca.get("trusted") is None:
        return Check("ca", WARN, str(f.ca.get("summary")), "taskmux ca install")
    if not f.ca.get("trusted"):
        return Check("ca", FAIL, f"the local CA ({f.ca.get('path')}) is not trusted: "
                     "browsers will warn on https://*.localhost", "taskmux ca install")
    return Check("ca", OK, f.ca.get("summary") or f"trusted ({f.ca.get('path')})")


def check_browsers(f: Facts) -> Check:
    """What the browsers' own NSS databases trust (Chromium and Firefox on Linux do not read
    the system store)."""
    if not f.browsers and not f.nss:
        return Check("browsers", SKIP, "no Chromium-family browser or Firefox found")
    if not isinstance(f.ca, dict) or not f.ca.get("exists"):
        return Check("browsers", SKIP, "no local CA yet")
    fix = "taskmux ca install"
    if f.nss_error:
        return Check("browsers", WARN, f"cannot check the browsers' NSS databases: "
                     f"{f.nss_error}", "sudo apt install libnss3-tools")
    from taskmuxctl.core.system.truststore import CHROMIUM_FAMILY

    chromium = [b for b in f.browsers if b in CHROMIUM_FAMILY]
    dbs = {n["db"] for n in f.nss}
    if chromium and f.chromium_db not in dbs:
        return Check("browsers", FAIL, f"{', '.join(chromium)} trusts added roots only from "
                     f"{f.chromium_db}, which does not exist: https://*.localhost will show "
                     "a certificate error there", fix)
    untrusted = [f"{n['db']} ({n['detail']})" for n in f.nss if not n["trusted"]]
    if untrusted:
        return Check("browsers", FAIL, "the local CA is not trusted by "
                     + "; ".join(untrusted), fix)
    if not f.nss:
        return Check("browsers", WARN, f"{', '.join(f.browsers)} installed but no NSS "
                     "database found (start Firefox once)", fix)
    return Check("browsers", OK, "trusted by " + ", ".join(sorted(dbs)))


def check_update(f: Facts) -> Check:
    sec = _section(f, f.update, "update")
    if isinstance(sec, Check):
        return sec
    current = sec.get("current")
    summary = sec.get("summary") or f"version {current}"
    if current and current in (sec.get("bad_versions") or []):
        return Check("update", FAIL, f"running {current}, which is recorded as bad",
                     "taskmux update --rollback")
    if sec.get("last_error"):
        return Check("update", WARN, f"{summary}; last check failed: {sec['last_error']}",
                     "taskmux update --check")
    return Check("update", OK, summary)


CHECKS: tuple[Callable[[Facts], Check], ...] = (
    check_tmux, check_python, check_state_dir, check_disk, check_socket, check_daemon,
    check_service, check_service_files, check_service_code, check_proxy, check_dns, check_ca,
    check_browsers, check_update)


def run_checks(facts: Facts) -> list[Check]:
    return [check(facts) for check in CHECKS]


def _q(path: str) -> str:
    import shlex

    return shlex.quote(path)
