"""What the privileged half checks before it trusts a name, a path or a file (issue 12).

The real-daemon attack is in test_privileges.py; these pin down each check. Tests that need
files of another owner, or root's view of a path, need root and skip elsewhere.
"""

from __future__ import annotations

import json
import os
import pwd
import threading
import time

import pytest

from taskmuxctl.core.system import hostnames, hostsfile, rootfiles
from taskmuxctl.core.system.hostsrecord import MAX_RECORD_NAMES, read_record, record_path
from taskmuxd import rootconfig
from tests.helpers import read

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (files of other owners, "
                                "root's checks)")

EVIL = [
    ("x\nadvuser ALL=(ALL) NOPASSWD: ALL\n#", "not under .localhost"),
    ("a\n.localhost", "characters other than"),
    ("a\r.localhost", "characters other than"),
    ("nul\x00.localhost", "characters other than"),
    ("two words.localhost", "characters other than"),
    ("tab\t.localhost", "characters other than"),
    ("Upper.localhost", "characters other than"),
    ("caf\u00e9.localhost", "characters other than"),
    ("xn--caf-dma.localhost", None),  # the ASCII form of the one above is fine
    ("a..b.localhost", "empty label"),
    (".a.localhost", "empty label"),
    ("-a.localhost", "starts or ends with '-'"),
    ("a-.localhost", "starts or ends with '-'"),
    ("a" * 64 + ".localhost", "longer than 63"),
    ("a" * 63 + ".localhost", None),
    (".".join(["a" * 60] * 5) + ".localhost", "longer than 253"),
    ("localhost", "not under .localhost"),  # the TLD itself
    ("www.example.com", "not under .localhost"),
    ("evillocalhost", "not under .localhost"),
    ("../../etc/passwd", "not under .localhost"),
    ("../x.localhost", "empty label"),
    ("a/b.localhost", "characters other than"),
    ("", "empty"),
    ("api.shop.localhost", None),
    ("shop.localhost", None),
    ("a-b.c9.localhost", None),
]


@pytest.mark.parametrize(("name", "why"), EVIL)
def test_a_name_is_written_only_when_it_is_a_host_name_under_the_tld(
        name: str, why: str | None) -> None:
    problem = hostnames.problem(name, "localhost")
    if why is None:
        assert problem is None
    else:
        assert problem is not None and why in problem


def test_non_strings_and_bad_tlds_are_refused() -> None:
    assert hostnames.problem(42, "localhost") == "not a string (int)"
    assert hostnames.problem(None, "localhost") == "not a string (NoneType)"
    assert hostnames.problem("a.test", "test") is None
    assert hostnames.problem("a.b.dev.test", "dev.test") is None
    for tld in ("", "a..b", "-x", "x y", "UP"):
        assert hostnames.problem_tld(tld) is not None
        assert hostnames.problem(f"a.{tld}", tld) is not None


def test_hosts_write_leaves_out_every_bad_name_and_logs_it(tmp_path: str,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    path = os.path.join(tmp_path, "hosts")
    with open(path, "w") as fh:
        fh.write("127.0.0.1 localhost\n")
    given = [name for name, _ in EVIL] + ["shop.localhost"]
    assert hostsfile.write(path, given, "localhost") is True
    text = read(path)
    good = [name for name, why in EVIL if why is None]
    assert hostsfile.block_names(text) == good  # once each, in order
    assert "advuser" not in text and "example.com" not in text and "\x00" not in text
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1 localhost" and len(lines) == 1 + 3 + 2 * len(good)
    refused = [r for r in caplog.records if "refused to write the host name" in r.message]
    assert len(refused) == sum(1 for _, why in EVIL if why is not None)
    assert "\\n" in refused[0].message and "\n" not in refused[0].message  # shown, not acted


def test_hosts_write_is_atomic_keeps_owner_and_mode_and_leaves_no_temporary(
        tmp_path: str) -> None:
    path = os.path.join(tmp_path, "hosts")
    with open(path, "w") as fh:
        fh.write("127.0.0.1 localhost\n")
    os.chmod(path, 0o640)
    group = os.getgid() if os.geteuid() else pwd.getpwnam("nobody").pw_gid
    os.chown(path, os.geteuid(), group)
    inode = os.stat(path).st_ino
    assert hostsfile.write(path, ["a.localhost"]) is True
    st = os.stat(path)
    assert st.st_ino != inode  # replaced (renamed over), not rewritten in place
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, os.geteuid(), group)
    assert os.listdir(tmp_path) == ["hosts"]


@needs_root
def test_as_root_the_hosts_file_is_never_reached_through_a_link(tmp_path: str) -> None:
    victim = os.path.join(tmp_path, "victim")
    with open(victim, "w") as fh:
        fh.write("# root only\n")
    link = os.path.join(tmp_path, "hosts")
    os.symlink(victim, link)
    with pytest.raises(rootfiles.UnsafeFile, match="symbolic link"):
        hostsfile.write(link, ["a.localhost"])
    assert read(victim) == "# root only\n" and os.path.islink(link)


@needs_root
def test_as_root_the_hosts_file_must_sit_where_only_root_can_change_it(tmp_path: str) -> None:
    nobody = pwd.getpwnam("nobody")
    folder = os.path.join(tmp_path, "users")
    os.mkdir(folder)
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    path = os.path.join(folder, "hosts")
    with open(path, "w") as fh:
        fh.write("x\n")
    with pytest.raises(rootfiles.UnsafeFile, match="belongs to uid"):
        hostsfile.write(path, ["a.localhost"])
    assert read(path) == "x\n"


@needs_root
def test_path_problem_trusts_only_what_root_alone_can_change(tmp_path: str) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    base = os.path.join(tmp_path, "etc")
    os.mkdir(base, 0o755)

    def fresh(name: str, mode: int = 0o644, owner: int = 0) -> str:
        path = os.path.join(base, name)
        with open(path, "w") as fh:
            fh.write("x = 1\n")
        os.chown(path, owner, 0)
        os.chmod(path, mode)
        return path

    assert rootfiles.path_problem(fresh("ok")) is None
    assert rootfiles.path_problem(os.path.join(base, "missing")) is None
    assert "not root" in str(rootfiles.path_problem(fresh("theirs", owner=nobody)))
    assert "writable by group or others" in str(rootfiles.path_problem(fresh("loose", 0o666)))
    os.symlink(fresh("real"), os.path.join(base, "link"))
    assert "symbolic link" in str(rootfiles.path_problem(os.path.join(base, "link")))
    os.mkfifo(os.path.join(base, "fifo"), 0o600)
    assert "not a regular file" in str(rootfiles.path_problem(os.path.join(base, "fifo")))
    # Folders: world-writable only with the sticky bit; a link only from a safe folder.
    open_dir = os.path.join(base, "open")
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)
    assert "writable by group" in str(rootfiles.path_problem(os.path.join(open_dir, "f")))
    os.chmod(open_dir, 0o1777)
    assert rootfiles.path_problem(os.path.join(open_dir, "f")) is None
    theirs = os.path.join(base, "theirs-dir")
    os.mkdir(theirs)
    os.chown(theirs, nobody, 0)
    assert "not root" in str(rootfiles.path_problem(os.path.join(theirs, "f")))
    os.symlink(theirs, os.path.join(base, "to-theirs"))  # root's link to a user's folder
    assert "not root" in str(rootfiles.path_problem(os.path.join(base, "to-theirs", "f")))
    os.symlink(base, os.path.join(base, "to-self"))
    assert rootfiles.path_problem(os.path.join(base, "to-self", "ok")) is None
    assert rootfiles.path_problem("relative/path") is not None


@needs_root
def test_a_users_file_is_read_only_when_it_is_a_small_regular_file_of_theirs(
        tmp_path: str) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    path = os.path.join(tmp_path, "f")
    with open(path, "w") as fh:
        fh.write("abc")
    assert rootfiles.read_user_file(path, 10, (0,)) == b"abc"
    assert rootfiles.read_user_file(path, 10, None) == b"abc"
    with pytest.raises(rootfiles.UnsafeFile, match="belongs to uid 0"):
        rootfiles.read_user_file(path, 10, (nobody,))
    with pytest.raises(rootfiles.UnsafeFile, match="larger than 2 bytes"):
        rootfiles.read_user_file(path, 2, None)
    os.symlink("/etc/shadow", os.path.join(tmp_path, "link"))
    with pytest.raises(rootfiles.UnsafeFile, match="symbolic link"):
        rootfiles.read_user_file(os.path.join(tmp_path, "link"), 10, None)
    with pytest.raises(FileNotFoundError):
        rootfiles.read_user_file(os.path.join(tmp_path, "none"), 10, None)


def test_a_fifo_or_device_is_refused_without_waiting(tmp_path: str) -> None:
    fifo = os.path.join(tmp_path, "fifo")
    os.mkfifo(fifo, 0o600)
    done = threading.Event()
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            rootfiles.read_user_file(fifo, 100, None)
        except BaseException as exc:
            errors.append(exc)
        done.set()

    started = time.monotonic()
    threading.Thread(target=attempt, daemon=True).start()
    assert done.wait(5), "reading a FIFO blocked"
    assert time.monotonic() - started < 5
    assert isinstance(errors[0], rootfiles.UnsafeFile) and "not a regular file" in str(errors[0])
    with pytest.raises(rootfiles.UnsafeFile, match="not a regular file"):
        rootfiles.read_user_file("/dev/zero", 100, None)


def test_the_record_of_names_is_capped(tmp_path: str, caplog: pytest.LogCaptureFixture) -> None:
    home = str(tmp_path)
    many = [f"n{i}.localhost" for i in range(MAX_RECORD_NAMES + 10)]
    with open(record_path(home), "w") as fh:
        json.dump({"version": 1, "names": many}, fh)
    assert read_record(home) == many[:MAX_RECORD_NAMES]
    assert "only the first" in caplog.text
    with open(record_path(home), "w") as fh:
        fh.write('{"version": 1, "names": ["' + "a" * (2 * 1024 * 1024) + '"]}')
    assert read_record(home) == []
    assert "larger than" in caplog.text
    os.unlink(record_path(home))
    os.mkfifo(record_path(home))
    assert read_record(home) == []  # refused at once, not waited on
    with open(os.path.join(home, "deep"), "w") as fh:
        fh.write("[" * 100000)
    os.replace(os.path.join(home, "deep"), record_path(home))
    assert read_record(home) == []


def test_root_configuration_defaults_and_refusals(tmp_path: str) -> None:
    missing = os.path.join(tmp_path, "none.toml")
    with pytest.raises(rootconfig.RootConfigError, match="does not exist"):
        rootconfig.load({rootconfig.ENV: missing})
    cfg = rootconfig.RootConfig()
    assert (cfg.hosts_file, cfg.dns_managed_tld) == ("/etc/hosts", "localhost")
    assert cfg.bind_problem("127.0.0.1", 443) is None
    assert cfg.bind_problem("::1", 80) is None
    assert cfg.bind_problem("0.0.0.0", 8443) is None  # not privileged: anyone may
    assert "privileged_ports" in str(cfg.bind_problem("127.0.0.1", 22))
    assert "privileged_addresses" in str(cfg.bind_problem("0.0.0.0", 443))
    assert "privileged_ports" in str(cfg.bind_problem("127.0.0.1", 53))


@needs_root
def test_root_configuration_is_read_only_from_root_and_checked(tmp_path: str) -> None:
    path = os.path.join(tmp_path, "taskmux.toml")

    def load(text: str, mode: int = 0o644) -> rootconfig.RootConfig:
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, mode)
        return rootconfig.load({rootconfig.ENV: path})

    got = load('hosts_file = "/srv/hosts"\nprivileged_ports = [443, 53]\n')
    assert (got.hosts_file, got.privileged_ports, got.source) == ("/srv/hosts", [443, 53], path)
    for text, why in (('hosts_file = "relative"\n', "not an absolute path"),
                      ('dns_managed_tld = "com\\nx"\n', "not a domain name"),
                      ("privileged_ports = [8443]\n", "not a port below 1024"),
                      ('privileged_addresses = ["nope"]\n', "privileged_addresses"),
                      ("surprise = 1\n", "valid keys"),
                      ('source = "/x"\n', "unknown key"),
                      ("not toml [", "not valid TOML")):
        with pytest.raises(rootconfig.RootConfigError, match=why):
            load(text)
    with pytest.raises(rootconfig.RootConfigError, match="is not trusted"):
        load("", 0o666)


def test_the_ca_certificate_to_trust_is_read_as_hostile_input(tmp_path: str) -> None:
    from taskmuxctl.core.system import truststore

    cert = os.path.join(tmp_path, "ca.crt")
    body = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n"
    with open(cert, "w") as fh:
        fh.write(body)
    assert truststore.certificate_pem(cert) == body.encode()
    link = os.path.join(tmp_path, "link.crt")
    os.symlink("/etc/shadow", link)
    for text, why in ((None, "symbolic link"), ("root:x:0:0\n", "not one PEM"),
                      (body + body, "not one PEM"), (body.replace("TUlJQg==", "%%"), "base64")):
        path = link
        if text is not None:
            path = os.path.join(tmp_path, "bad.crt")
            with open(path, "w") as fh:
                fh.write(text)
        with pytest.raises(ValueError, match=why):
            truststore.certificate_pem(path)
    refused = truststore.install_system(link, "taskmux", truststore.SystemStore(
        "debian", os.path.join(tmp_path, "anchors"), ".crt", ("true",)))
    assert not refused.done and "nothing was trusted" in refused.detail
    assert not os.path.exists(os.path.join(tmp_path, "anchors"))


@needs_root
def test_the_system_service_never_runs_code_a_user_can_change(tmp_path: str) -> None:
    """The system unit runs its program as root: a boot-guard or virtualenv in a user's
    home would let that user change what root runs, so installing it is refused."""
    from taskmuxctl.service import install
    from taskmuxctl.service.manager import ServiceError
    from taskmuxctl.service.target import Target

    nobody = pwd.getpwnam("nobody")
    app = os.path.join(tmp_path, "home", ".taskmux", "app")
    os.makedirs(app)
    guard = os.path.join(app, "bootguard.py")
    with open(guard, "w") as fh:
        fh.write("# the user's\n")
    os.chown(os.path.join(tmp_path, "home"), nobody.pw_uid, nobody.pw_gid)
    program = ["/usr/bin/python3", guard, "--home", os.path.dirname(app), "--"]
    assert "belongs to uid" in str(install.root_code_problem(program))
    target = Target("systemd", "system", "nobody", nobody.pw_uid, nobody.pw_gid,
                    os.path.join(tmp_path, "home"), os.path.dirname(app),
                    root=os.path.join(tmp_path, "sysroot"))
    with pytest.raises(ServiceError, match="a user could change what root runs"):
        install.install(target, [*program, "run"])
    assert not os.path.exists(os.path.join(tmp_path, "sysroot"))  # nothing written
    os.chmod(guard, 0o666)
    os.chown(os.path.join(tmp_path, "home"), 0, 0)
    assert "writable by group or others" in str(install.root_code_problem(program))
    os.chmod(guard, 0o644)
    assert install.root_code_problem(program) is None
