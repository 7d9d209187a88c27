"""Collect the facts doctor judges: this is where all of doctor's I/O happens."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys

from taskmuxctl import __version__
from taskmuxctl.core import diskspace
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, Method, RpcError
from taskmuxctl.core.rpcclient import Client, DaemonUnavailable, daemon_pid
from taskmuxctl.doctor import dnsquery
from taskmuxctl.doctor.facts import ABSENT, Facts
from taskmuxctl.service import record as record_mod
from taskmuxctl.service.manager import ServiceError

CA_STATUS = "ca.status"


def gather(paths: Paths) -> Facts:
    f = Facts()
    _tmux(f)
    _python(f)
    _state(f, paths)
    _daemon(f, paths)
    _service(f, paths)
    _dns_resolution(f)
    _browsers(f)
    return f


def _browsers(f: Facts) -> None:
    """Which browsers read NSS databases here, and whether each database trusts the CA."""
    from taskmuxctl.core.system import truststore

    f.browsers = truststore.installed_browsers()
    home = os.path.expanduser("~")
    f.chromium_db = os.path.join(home, truststore.CHROMIUM_DB)
    dbs = truststore.nss_databases(home)
    ca = f.ca if isinstance(f.ca, dict) else {}
    if not dbs or not ca.get("exists") or not ca.get("path"):
        f.nss = [{"db": db, "trusted": None, "detail": "not checked"} for db in dbs]
        return
    if shutil.which("certutil") is None:
        f.nss_error = "certutil is not installed"
        return
    try:
        name, der = _ca_name_and_der(str(ca["path"]))
    except (OSError, ValueError) as exc:
        f.nss_error = f"cannot read the CA: {exc}"
        return
    for db in dbs:
        trusted, detail = truststore.nss_trust(db, name, der)
        f.nss.append({"db": db, "trusted": trusted, "detail": detail})


def _ca_name_and_der(path: str) -> tuple[str, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    with open(path, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(names[0].value) if names else "taskmux local CA"
    return name, cert.public_bytes(Encoding.DER)


def _tmux(f: Facts) -> None:
    from taskmuxctl.service import spawn

    f.tmux_path = shutil.which("tmux")
    if f.tmux_path is None:
        return
    try:
        done = spawn.run([f.tmux_path, "-V"], timeout=10)
    except (OSError, TimeoutError) as exc:
        f.tmux_error = str(exc)
        return
    if done.returncode == 0:
        f.tmux_version = done.stdout.strip()
    else:
        f.tmux_error = (done.stderr or done.stdout).strip() or f"exit {done.returncode}"


def _python(f: Facts) -> None:
    from importlib import metadata

    f.python_version = tuple(sys.version_info[:3])  # type: ignore[assignment]
    f.python_executable = sys.executable
    f.client_version = __version__
    try:
        f.installed_version = metadata.version("taskmux")
    except metadata.PackageNotFoundError:
        f.installed_version = None


def _state(f: Facts, paths: Paths) -> None:
    import pwd

    f.my_uid = os.getuid()
    try:
        f.my_user = pwd.getpwuid(f.my_uid).pw_name
    except KeyError:
        f.my_user = str(f.my_uid)
    f.state_dir = paths.home
    try:
        st = os.stat(paths.home)
    except FileNotFoundError:
        pass
    else:
        f.state_exists = True
        f.state_is_dir = stat.S_ISDIR(st.st_mode)
        f.state_uid = st.st_uid
        f.state_mode = stat.S_IMODE(st.st_mode)
        if f.state_is_dir:
            with os.scandir(paths.home) as entries:
                f.foreign_entries = sorted(
                    e.name for e in entries if e.stat(follow_symlinks=False).st_uid != f.my_uid)
    f.disk = diskspace.space(paths.home)
    f.socket_path = paths.socket
    f.socket_problem = paths.socket_path_problem()
    try:
        st = os.lstat(paths.socket)
    except OSError:
        return
    f.socket_exists = True
    f.socket_is_socket = stat.S_ISSOCK(st.st_mode)
    f.socket_uid = st.st_uid
    f.socket_mode = stat.S_IMODE(st.st_mode)


def _daemon(f: Facts, paths: Paths) -> None:
    f.daemon_pid = daemon_pid(paths)
    try:
        with Client(paths, timeout=5.0) as client:
            f.daemon_status = client.call(Method.DAEMON_STATUS)
            _ca(f, client)
    except DaemonUnavailable as exc:
        f.daemon_error = exc.message
        return
    except RpcError as exc:
        f.daemon_error = exc.message
        return
    status = f.daemon_status or {}
    f.proxy = status.get("proxy", ABSENT)
    f.dns = status.get("dns", ABSENT)
    f.update = status.get("update", ABSENT)


def _ca(f: Facts, client: Client) -> None:
    try:
        f.ca = client.call(CA_STATUS)
    except DaemonUnavailable:
        raise
    except RpcError as exc:
        if exc.code == Code.METHOD_NOT_FOUND:
            f.ca = ABSENT
        else:
            f.ca_error = exc.message


def _service(f: Facts, paths: Paths) -> None:
    rec = record_mod.load(paths)
    if rec is None:
        return
    f.service = {"manager": rec.manager, "scope": rec.scope, "unit": rec.unit,
                 "unit_file": rec.unit_file, "user": rec.user}
    try:
        f.service_state = rec.controller().state().to_dict()
    except ServiceError as exc:
        f.service_error = exc.message
    _unit_files(f, rec, paths)
    if rec.scope == "system":
        _root_code(f, rec, paths)


def _unit_files(f: Facts, rec: record_mod.Record, paths: Paths) -> None:
    from taskmuxctl.core.daemonprogram import daemon_program
    from taskmuxctl.service import rootcode
    from taskmuxctl.service.escape import UnrepresentableError
    from taskmuxctl.service.render import TemplateError, render
    from taskmuxctl.service.target import Target, TargetError, _passwd_by_name

    try:
        name, uid, gid, home = _passwd_by_name(rec.user)
        target = Target(rec.manager, rec.scope, name, uid, gid, home, paths.home,
                        root=os.environ.get("TASKMUX_SERVICE_ROOT", ""), environ=os.environ)
        specs = render(target, daemon_program(paths), shutil.which("tmux"))
    except (TargetError, TemplateError, UnrepresentableError, OSError) as exc:
        f.service_error = f.service_error or str(exc)
        return
    for spec in specs:
        path = target.on_disk(spec.path)
        try:
            with open(path, encoding="utf-8") as fh:
                disk: str | None = fh.read()
        except (OSError, UnicodeDecodeError):
            disk = None
        f.unit_files[path] = (disk, spec.content)
    f.exec_program = rootcode.installed_program(rec.manager, target.on_disk(target.unit_file))
    if f.exec_program:
        exe = f.exec_program[0]
        f.exec_program_ok = os.path.isfile(exe) and os.access(exe, os.X_OK)


def _root_code(f: Facts, rec: record_mod.Record, paths: Paths) -> None:
    """What root runs when the system service starts, and whether a user could change it."""
    from taskmuxctl.core.daemonprogram import daemon_program
    from taskmuxctl.service import rootcode

    f.root_program = rootcode.installed_program(rec.manager, rec.unit_file)
    if f.root_program is None:
        return
    # This installation's packages are known; another installation's are not looked for.
    f.root_packages_checked = f.root_program == daemon_program(paths)
    packages = rootcode.this_installation_packages() if f.root_packages_checked else None
    try:
        f.root_code_problem = rootcode.program_problem(f.root_program, packages)
    except OSError as exc:
        f.root_code_error = str(exc)


def _dns_resolution(f: Facts) -> None:
    dns = f.dns if isinstance(f.dns, dict) else None
    if dns is None or not dns.get("serving"):
        return
    port = dns.get("port")
    if isinstance(port, int):
        try:
            f.dns_direct = dnsquery.query_a(f.dns_name, "127.0.0.1", port)
        except (OSError, ValueError) as exc:
            f.dns_direct_error = str(exc) or type(exc).__name__
    try:
        infos = socket.getaddrinfo(f.dns_name, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        f.dns_system_error = str(exc)
        return
    f.dns_system = sorted({str(info[4][0]) for info in infos})
