"""Everything doctor looks at, gathered once; the checks only read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ABSENT = "absent"  # a daemon.status section or RPC method this daemon does not have


@dataclass
class Facts:
    # tmux
    tmux_path: str | None = None
    tmux_version: str | None = None  # `tmux -V` output
    tmux_error: str | None = None
    # Python and taskmux
    python_version: tuple[int, int, int] = (0, 0, 0)
    python_executable: str = ""
    client_version: str = ""
    installed_version: str | None = None  # the distribution's metadata
    # the state directory
    my_uid: int = 0
    my_user: str = ""
    state_dir: str = ""
    state_exists: bool = False
    state_is_dir: bool = False
    state_uid: int | None = None
    state_mode: int | None = None
    foreign_entries: list[str] = field(default_factory=list)  # not owned by my_uid
    disk: dict[str, Any] | None = None  # diskspace.space() of the state directory
    # the socket
    socket_path: str = ""
    socket_problem: str | None = None  # path too long
    socket_exists: bool = False
    socket_is_socket: bool = False
    socket_uid: int | None = None
    socket_mode: int | None = None
    # the daemon
    daemon_pid: int | None = None  # daemon.pid names a live process
    daemon_status: dict[str, Any] | None = None  # daemon.status, when it answered
    daemon_error: str | None = None
    # the service
    service: dict[str, Any] | None = None  # the install record (manager, scope, unit...)
    service_state: dict[str, Any] | None = None  # the manager's view
    service_error: str | None = None
    unit_files: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    # path -> (content on disk or None, content as rendered now)
    exec_program: list[str] | None = None  # the program the installed unit runs
    exec_program_ok: bool = False
    # what root runs when the system service starts (None: no system service, or unreadable)
    root_program: list[str] | None = None
    root_code_problem: str | None = None  # why a user could change it
    root_code_error: str | None = None  # it could not be examined
    root_packages_checked: bool = False  # this installation's packages were checked too
    # daemon.status sections of other subsystems (ABSENT when the daemon has none)
    proxy: dict[str, Any] | str | None = None
    dns: dict[str, Any] | str | None = None
    update: dict[str, Any] | str | None = None
    ca: dict[str, Any] | str | None = None  # ca.status
    ca_error: str | None = None
    # browsers that read NSS databases, and what each database trusts
    browsers: list[str] = field(default_factory=list)
    chromium_db: str = ""  # where the Chromium family looks (~/.pki/nssdb)
    nss: list[dict[str, Any]] = field(default_factory=list)  # {db, trusted, detail}
    nss_error: str | None = None  # why the databases could not be read
    # DNS resolution of a test name
    dns_name: str = "taskmux-doctor.localhost"
    dns_direct: list[str] | None = None  # answers from the daemon's DNS server
    dns_direct_error: str | None = None
    dns_system: list[str] | None = None  # answers from the system resolver
    dns_system_error: str | None = None
