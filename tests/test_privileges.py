"""The privilege drop, for real: a daemon started as root binds ports below 1024 and writes
root-only files, then runs as a throwaway user for good. Needs root (skips elsewhere).

The test venv's interpreter lives under /root (0700), which the dropped daemon could not read;
these daemons run on /usr/bin/python3 with the venv's packages on PYTHONPATH instead.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import random
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import pytest

from taskmuxctl.core.system import hostsfile
from taskmuxd import privileges
from tests.helpers import REPO, call, read, route, wait_until
from tests.users import throwaway_user
from tests.web import backend, ca_context, get

SYSTEM_PYTHON = "/usr/bin/python3"
RESOLVED_DROP_IN = "/etc/systemd/resolved.conf.d/taskmux-localhost.conf"


def user_python_env(extra: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run Python as another user")
    check = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    if check.stdout.strip() != str(tuple(sys.version_info[:2])):
        pytest.skip(f"{SYSTEM_PYTHON} is not Python {sys.version_info[:2]}")
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TASKMUX_", "NOTIFY_SOCKET", "WATCHDOG_", "TMUX", "SUDO_"))}
    env.update(PYTHONPATH=f"{REPO}:{site_packages}", TASKMUX_TEST_HOOKS="1", HOME="/root")
    env.update(extra or {})
    return SYSTEM_PYTHON, env


def free_privileged_ports(count: int) -> list[int]:
    """Ports below 1024 free for TCP and UDP on 127.0.0.1 (these tests run as root)."""
    found: list[int] = []
    for port in random.sample(range(600, 1024), 424):
        try:
            with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        found.append(port)
        if len(found) == count:
            return found
    pytest.skip("no free ports below 1024")


@contextlib.contextmanager
def root_folder() -> Iterator[str]:
    """A folder of root's, 0755, standing in for /etc: only root can change it (under /tmp,
    whose sticky bit keeps others from renaming or removing root's entries)."""
    folder = tempfile.mkdtemp(prefix="tmx-root-", dir="/tmp")
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", folder])


def root_file(path: str, text: str, mode: int = 0o644) -> str:
    with open(path, "w") as fh:
        fh.write(text)
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    return path


def system_config(folder: str, text: str) -> dict[str, str]:
    """The environment that makes the privileged half read ``text`` as root's configuration
    (``TASKMUX_SYSTEM_CONFIG``, honoured because the file is root's in a folder of root's)."""
    return {"TASKMUX_SYSTEM_CONFIG": root_file(os.path.join(folder, "taskmux.toml"), text)}


def prepare_home(user: pwd.struct_passwd, config: str, files: dict[str, str] | None = None
                 ) -> str:
    """~user/.taskmux with ``config``, owned by the user (as the user would have it)."""
    state = os.path.join(user.pw_dir, ".taskmux")
    os.makedirs(state, mode=0o700, exist_ok=True)
    for name, text in {"config.toml": config, **(files or {})}.items():
        with open(os.path.join(state, name), "w") as fh:
            fh.write(text)
    for folder, _, names in os.walk(state):
        os.chown(folder, user.pw_uid, user.pw_gid)
        for name in names:
            os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid)
    return state


@contextlib.contextmanager
def daemon_process(argv: list[str], env: dict[str, str], log: str,
                   **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([*argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/", **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def wait_answering(sock: str, proc: subprocess.Popen[bytes], log: str) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {read(log)}")
        try:  # ready: every subsystem started (it answers, not ready, before that)
            return call(sock, "daemon.status", timeout=1)["ready"] is True
        except (OSError, RuntimeError):
            return False
    wait_until(up, timeout=30, what="the daemon to be ready")


def test_root_binds_low_ports_then_runs_as_the_user_for_good(tmp_path: str) -> None:
    if os.path.exists("/run/systemd/resolve"):
        pytest.skip("systemd-resolved runs here; this test must not change its settings")
    https, redirect, dns_port = free_privileged_ports(3)
    python, env = user_python_env({"TASKMUX_TMUX_SOCKET": f"tmxdrop-{os.getpid()}"})
    log = os.path.join(tmp_path, "daemon.log")
    with throwaway_user() as user, root_folder() as etc:
        # Root allows exactly these ports below 1024, on loopback.
        env.update(system_config(etc, f"privileged_ports = [{https}, {redirect}, {dns_port}]\n"
                                      "privileged_addresses = [\"127.0.0.1\"]\n"))
        state = prepare_home(user, (
            f"proxy_https_port = {https}\nproxy_http_redirect_port = {redirect}\n"
            f"proxy_bind = \"127.0.0.1\"\nhost_resolver = \"dns_server\"\n"
            f"dns_server_port = {dns_port}\n"))
        sock = os.path.join(state, "ctl.sock")
        argv = [python, "-m", "taskmuxd", "run", "--user", user.pw_name]
        with daemon_process(argv, env, log) as proc:
            wait_answering(sock, proc, log)
            status = call(sock, "daemon.status")
            # Every uid and gid is the user's, no supplementary group is root's, and no
            # capability is left: the process cannot become root again.
            ps = proc_status(proc.pid)
            assert ps["Uid"].split() == [str(user.pw_uid)] * 4
            assert ps["Gid"].split() == [str(user.pw_gid)] * 4
            groups = {int(g) for g in ps["Groups"].split()}
            assert groups == set(os.getgrouplist(user.pw_name, user.pw_gid))
            assert 0 not in groups
            assert int(ps["CapEff"], 16) == 0 and int(ps["CapPrm"], 16) == 0
            assert status["uid"] == user.pw_uid and status["home"] == state
            me = call(sock, "debug.identity")
            assert me["regained_root"] is False and "not permitted" in me["error"]
            assert me["uids"] == [user.pw_uid] * 3
            # What its tasks inherit: the user's environment, nothing left of sudo.
            assert me["env"] == {"HOME": user.pw_dir, "USER": user.pw_name,
                                 "LOGNAME": user.pw_name, "SUDO_UID": None}
            assert me["cwd"] == user.pw_dir
            # It still serves the ports it bound as root.
            assert status["proxy"]["bound"] and status["proxy"]["https_port"] == https
            assert status["proxy"]["redirect_port"] == redirect
            assert status["dns"]["bound"] and status["dns"]["port"] == dns_port
            with backend("web") as web:
                call(sock, "routes.set", {"project": "drop",
                                          "backends": [route("web", "web", web.port)]})
                tls = ca_context(call(sock, "ca.info")["cert"])
                code, resp, _ = get("web.drop.localhost", https, tls)
                assert (code, resp.getheader("X-Backend")) == (200, "web")
            with socket.create_connection(("127.0.0.1", redirect), timeout=10) as s:
                s.sendall(b"GET /x HTTP/1.1\r\nHost: web.drop.localhost\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 301 ")
            reply = dns.query.udp(dns.message.make_query("web.drop.localhost", "A"),
                                  "127.0.0.1", port=dns_port, timeout=5)
            assert reply.answer[0][0].address == "127.0.0.1"
            # Its tasks run as the user, in a tmux server of the user's.
            proj = os.path.join(user.pw_dir, "proj")
            os.makedirs(proj)
            with open(os.path.join(proj, "taskmux.toml"), "w") as fh:
                fh.write('name = "dropped"\n[tasks.who]\n'
                         'command = "id -u > whoami.txt; id -G >> whoami.txt; sleep 600"\n')
            os.chown(proj, user.pw_uid, user.pw_gid)
            started = call(sock, "project.start", {
                "config": os.path.join(proj, "taskmux.toml"), "cwd": proj,
                "env": {"PATH": os.environ["PATH"], "HOME": user.pw_dir}}, timeout=60)
            assert started["results"][0]["action"] == "started"
            who = os.path.join(proj, "whoami.txt")
            wait_until(lambda: os.path.exists(who) and read(who).count("\n") == 2,
                       what="the task to report who it is")
            uid, gids = read(who).splitlines()
            assert int(uid) == user.pw_uid and "0" not in gids.split()
            task_pid = started["results"][0]["pid"]
            assert proc_status(task_pid)["Uid"].split() == [str(user.pw_uid)] * 4
            # What it wrote after the drop is the user's own.
            for path in (state, os.path.join(state, "ca"), os.path.join(state, "ca", "ca.key"),
                         os.path.join(state, "daemon.pid")):
                assert os.stat(path).st_uid == user.pw_uid, path
            assert os.stat(state).st_mode & 0o777 == 0o700
        assert not os.path.exists(RESOLVED_DROP_IN)


def test_root_writes_the_hosts_block_before_dropping(tmp_path: str) -> None:
    python, env = user_python_env()
    log = os.path.join(tmp_path, "daemon.log")
    with root_folder() as etc, throwaway_user() as user:
        hosts_file = root_file(os.path.join(etc, "hosts"), "127.0.0.1 localhost\n")
        env.update(system_config(etc, f"hosts_file = \"{hosts_file}\"\n"))
        record = json.dumps({"version": 1, "tld": "localhost",
                             "names": ["api.shop.localhost", "shop.localhost"]})
        state = prepare_home(user, (
            "proxy_https_port = 0\nproxy_http_redirect_port = 0\n"
            f"host_resolver = \"etc_hosts\"\nhosts_file = \"{hosts_file}\"\n"),
            {"hostnames.json": record})
        argv = [python, "-m", "taskmuxd", "run"]  # the user comes from SUDO_UID
        with daemon_process(argv, {**env, "SUDO_UID": str(user.pw_uid)}, log) as proc:
            sock = os.path.join(state, "ctl.sock")
            wait_answering(sock, proc, log)
            text = read(hosts_file)
            assert text.startswith("127.0.0.1 localhost\n")
            assert hostsfile.block_names(text) == ["api.shop.localhost", "shop.localhost"]
            st = os.stat(hosts_file)
            assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)  # still root's, same mode
            section = call(sock, "daemon.status")["dns"]
            assert section["writable"] is False  # the user cannot change it any more
            assert call(sock, "daemon.status")["uid"] == user.pw_uid
        assert sorted(os.listdir(etc)) == ["hosts", "taskmux.toml"]  # no temporary left


SUDOERS_LINE = "advuser ALL=(ALL) NOPASSWD: ALL"
EVIL_NAMES = [
    f"x\n{SUDOERS_LINE}\n#",  # the attack of issue 12
    f"evil.localhost\n{SUDOERS_LINE}",
    "evil.localhost\r\n127.0.0.1 bank.example",
    "nul\x00.localhost",
    "two words.localhost",
    "www.example.com",  # another domain: never mapped to loopback by root
    "../../etc/passwd",
    "ok.shop.localhost",  # the one good name
]


def test_a_users_settings_cannot_make_root_write_another_file(tmp_path: str) -> None:
    """Regression (issue 12): the user's config.toml points hosts_file at a root-only file
    and hostnames.json holds names with newlines. Root must leave that file byte for byte
    as it was, write only its own hosts file, and write only the valid name there."""
    python, env = user_python_env({"TASKMUX_TMUX_SOCKET": f"tmxatk-{os.getpid()}"})
    log = os.path.join(tmp_path, "daemon.log")
    (https,) = free_privileged_ports(1)
    with root_folder() as etc, throwaway_user() as user:
        target = root_file(os.path.join(etc, "sudoers-x"), "# root only\n", 0o440)
        hosts_file = root_file(os.path.join(etc, "hosts"), "127.0.0.1 localhost\n")
        env.update(system_config(etc, f"hosts_file = \"{hosts_file}\"\n"
                                      "privileged_ports = [443]\n"))
        before = (read(target), os.stat(target))
        record = json.dumps({"version": 1, "tld": "localhost", "names": EVIL_NAMES})
        state = prepare_home(user, (
            f"proxy_https_port = {https}\nproxy_http_redirect_port = 0\n"
            "proxy_bind = \"127.0.0.1\"\n"
            f"host_resolver = \"etc_hosts\"\nhosts_file = \"{target}\"\n"),
            {"hostnames.json": record})
        argv = [python, "-m", "taskmuxd", "run", "--user", user.pw_name]
        with daemon_process(argv, env, log) as proc:
            sock = os.path.join(state, "ctl.sock")
            wait_answering(sock, proc, log)
            status = call(sock, "daemon.status")
        after = (read(target), os.stat(target))
        assert after[0] == before[0]
        assert (after[1].st_ino, after[1].st_mtime_ns, after[1].st_mode, after[1].st_uid) \
            == (before[1].st_ino, before[1].st_mtime_ns, before[1].st_mode, before[1].st_uid)
        text = read(hosts_file)
        assert hostsfile.block_names(text) == ["ok.shop.localhost"]
        assert SUDOERS_LINE not in text and "bank.example" not in text
        assert "example.com" not in text and "\x00" not in text
        assert sorted(os.listdir(etc)) == ["hosts", "sudoers-x", "taskmux.toml"]
        said = read(log)
        assert "is not used as root" in said and target in said
        assert said.count("refused to write the host name") == len(EVIL_NAMES) - 1
        # Nor can the user's settings make root bind a port below 1024 root did not allow.
        assert status["proxy"]["bound"] is False
        assert "privileged_ports" in status["proxy"]["error"], status["proxy"]["error"]


def test_root_refuses_a_system_config_a_user_could_have_written() -> None:
    """The seam (TASKMUX_SYSTEM_CONFIG) is no way in: a file the user owns, or a file of
    root's in a folder the user can write, stops the daemon before it does anything as
    root."""
    python, env = user_python_env()
    with root_folder() as etc, throwaway_user() as user:
        target = root_file(os.path.join(etc, "sudoers-x"), "# root only\n", 0o440)
        state = prepare_home(user, 'host_resolver = "etc_hosts"\nproxy_https_port = 0\n'
                             'proxy_http_redirect_port = 0\n', {"hostnames.json": json.dumps(
                                 {"version": 1, "names": EVIL_NAMES})})
        own = os.path.join(state, "root.toml")
        with open(own, "w") as fh:
            fh.write(f"hosts_file = \"{target}\"\n")
        os.chown(own, user.pw_uid, user.pw_gid)
        planted = os.path.join(user.pw_dir, "planted.toml")  # root's file, user's folder
        root_file(planted, f"hosts_file = \"{target}\"\n")
        for path, why in ((own, f"belongs to uid {user.pw_uid}"),
                          (planted, f"{user.pw_dir} belongs to uid {user.pw_uid}")):
            argv = [python, "-m", "taskmuxd", "run", "--user", user.pw_name]
            proc = subprocess.run(argv, env={**env, "TASKMUX_SYSTEM_CONFIG": path},
                                  capture_output=True, text=True, timeout=60, cwd="/")
            assert proc.returncode == 78, proc.stderr
            assert "is not trusted" in proc.stderr and why in proc.stderr, proc.stderr
        assert read(target) == "# root only\n"
        assert not os.path.exists(os.path.join(state, "ctl.sock"))


LAUNCHER = "import sys\nfrom taskmuxd.cli import main\nsys.exit(main())\n"


def test_root_refuses_to_run_from_code_a_user_could_change() -> None:
    """Started as root from a launcher or interpreter in a user's folder (what a unit left
    by an older taskmux may start), the daemon exits 78 before it does anything as root;
    the same launcher of root's, in a folder of root's, gets past the check."""
    python, env = user_python_env()
    with root_folder() as etc, throwaway_user() as user:
        env.update(system_config(etc, ""))
        # Invalid settings: past the code check, the daemon stops at them without starting.
        state = prepare_home(user, "log_levle = 'debug'\n")
        app = os.path.join(user.pw_dir, "app")  # as ~/.taskmux/app holds the boot-guard
        os.makedirs(app)
        launcher = os.path.join(app, "launch.py")
        with open(launcher, "w") as fh:
            fh.write(LAUNCHER)
        users_python = os.path.join(app, "python3")  # the system's, through the user's link
        os.symlink(os.path.realpath(python), users_python)
        for path in (app, launcher, users_python):
            os.lchown(path, user.pw_uid, user.pw_gid)
        roots_launcher = root_file(os.path.join(etc, "launch.py"), LAUNCHER)
        for argv in ([python, launcher], [users_python, roots_launcher]):
            proc = subprocess.run([*argv, "run", "--user", user.pw_name], env=env,
                                  capture_output=True, text=True, timeout=60, cwd="/")
            assert proc.returncode == 78, (argv, proc.stderr)
            assert "refusing to run as root" in proc.stderr, proc.stderr
            assert f"{user.pw_dir} belongs to uid {user.pw_uid}" in proc.stderr, proc.stderr
            assert "daemon install --user-unit" in proc.stderr
        proc = subprocess.run([python, roots_launcher, "run", "--user", user.pw_name],
                              env=env, capture_output=True, text=True, timeout=60, cwd="/")
        assert proc.returncode == 78 and "refusing" not in proc.stderr, proc.stderr
        assert "log_levle" in proc.stderr, proc.stderr
        assert sorted(os.listdir(state)) == ["config.toml"]  # nothing started


def test_without_root_low_ports_are_explained_and_the_daemon_runs_on(tmp_path: str) -> None:
    https, dns_port = free_privileged_ports(2)
    python, env = user_python_env({"TASKMUX_TMUX_SOCKET": f"tmxdrop-{os.getpid()}"})
    log = os.path.join(tmp_path, "daemon.log")
    with throwaway_user() as user:
        state = prepare_home(user, (
            f"proxy_https_port = {https}\nproxy_http_redirect_port = 0\n"
            f"proxy_bind = \"127.0.0.1\"\nhost_resolver = \"dns_server\"\n"
            f"dns_server_port = {dns_port}\n"))
        env.update(HOME=user.pw_dir, USER=user.pw_name)
        argv = [python, "-m", "taskmuxd", "run"]
        os.chown(tmp_path, user.pw_uid, user.pw_gid)
        with daemon_process(argv, env, log, user=user.pw_uid, group=user.pw_gid,
                            extra_groups=[]) as proc:
            sock = os.path.join(state, "ctl.sock")
            wait_answering(sock, proc, log)
            status = call(sock, "daemon.status")
            proxy, dns_section = status["proxy"], status["dns"]
            assert proxy["enabled"] and not proxy["bound"]
            for advice in ("sudo taskmuxd run --user", "setcap cap_net_bind_service=+ep",
                           "taskmux config set proxy_https_port"):
                assert advice in proxy["error"], proxy["error"]
            assert dns_section["bound"] is False
            assert "taskmux config set dns_server_port" in dns_section["error"]
            assert "setcap" in read(log)  # said in the log too
            assert call(sock, "daemon.ping") == {"pong": True}


def test_target_user_selection() -> None:
    me = pwd.getpwuid(os.getuid())
    # Not root: --user may only name yourself.
    assert privileges.target_user(None, {}, euid=1000) is None
    with pytest.raises(privileges.PrivilegeError, match="needs root"):
        privileges.target_user("root", {}, euid=12345)
    # Root: --user, else SUDO_UID, else stay root.
    nobody = pwd.getpwnam("nobody")
    assert privileges.target_user("nobody", {}, euid=0) == privileges.Target.from_pw(nobody)
    by_sudo = privileges.target_user(None, {"SUDO_UID": str(nobody.pw_uid)}, euid=0)
    assert by_sudo is not None and by_sudo.name == "nobody"
    assert privileges.target_user(None, {"SUDO_UID": "0"}, euid=0) is None
    assert privileges.target_user(None, {}, euid=0) is None
    with pytest.raises(privileges.PrivilegeError, match="no user"):
        privileges.target_user("no-such-user-xyz", {}, euid=0)
    target = privileges.Target.from_pw(me)
    assert privileges.state_paths(target, {}).home == os.path.join(me.pw_dir, ".taskmux")
    assert privileges.state_paths(target, {"TASKMUX_HOME": "/x"}).home == "/x"
    assert grp.getgrgid(nobody.pw_gid)  # the group exists for the drop to use


def test_root_reads_the_users_settings_as_the_user_never_through_a_link() -> None:
    """A config.toml that is a link to a root-only file (or a FIFO, which would stall root)
    is refused with a message, and nothing of the file's content is shown."""
    python, env = user_python_env()
    with root_folder() as etc, throwaway_user() as user:
        secret = root_file(os.path.join(etc, "secret.toml"), 'api_port = "s3cr3t"\n', 0o600)
        state = prepare_home(user, "")
        config = os.path.join(state, "config.toml")
        os.unlink(config)
        os.symlink(secret, config)
        argv = [python, "-m", "taskmuxd", "run", "--user", user.pw_name]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                              cwd="/")
        assert proc.returncode == 78, proc.stderr
        assert "symbolic link" in proc.stderr and "s3cr3t" not in proc.stderr
        os.unlink(config)
        os.mkfifo(config)
        os.chown(config, user.pw_uid, user.pw_gid)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                              cwd="/")
        assert proc.returncode == 78 and "not a regular file" in proc.stderr, proc.stderr
