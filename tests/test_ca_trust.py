"""``ca`` and ``dns`` commands and the trust stores, with the real tools pointed at temporary
folders (update-ca-certificates, certutil), never at the machine's own stores."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from typing import Any

import pytest

from taskmuxctl.core.system import resolver, truststore
from taskmuxd.certstore import CertStore
from tests.helpers import call, pid_gone, read, run_json, wait_until
from tests.test_certs import handshake
from tests.test_privileges import prepare_home, user_python_env
from tests.users import throwaway_user


def test_ca_path_and_mint(env: dict[str, str], home: str, tmp_path: str) -> None:
    code, out = run_json(["ca", "path"], env)  # starts the daemon, which creates the CA
    assert code == 0 and out["path"] == os.path.join(home, "ca", "ca.pem")
    assert os.path.exists(out["path"]) and len(out["fingerprint_sha256"]) == 95
    code, out = run_json(["ca", "mint"], env, cwd=str(tmp_path))
    assert code == 0 and out["minted"] == []  # no taskmux.toml here, no projects yet
    code, out = run_json(["ca", "mint", "shop"], env)
    assert code == 0 and out["minted"][0]["names"] == ["shop.localhost", "*.shop.localhost"]
    with open(os.path.join(tmp_path, "taskmux.toml"), "w") as fh:
        fh.write('name = "blog"\n')
    code, out = run_json(["ca", "mint"], env, cwd=str(tmp_path))
    assert code == 0 and [m["project"] for m in out["minted"]] == ["blog"]
    code, out = run_json(["ca", "mint", "no_pe"], env)
    assert code == 1 and "cannot be part of a host name" in out["error"]


def _update_ca_certificates(root: str) -> truststore.SystemStore:
    if shutil.which("update-ca-certificates") is None:
        pytest.skip("update-ca-certificates is not installed")
    dirs = {d: os.path.join(root, d) for d in ("local", "certs", "etc", "hooks")}
    for folder in dirs.values():
        os.makedirs(folder)
    conf = os.path.join(root, "ca-certificates.conf")
    open(conf, "w").close()
    # Another anchor, as every real store has: update-ca-certificates only rewrites the
    # bundle when something is left in it.
    other = CertStore(os.path.join(root, "other"))
    other.ca()
    shutil.copy(other.ca_cert_path, os.path.join(dirs["local"], "someone-else.crt"))
    return truststore.SystemStore("debian", dirs["local"], ".crt", (
        "update-ca-certificates", "--certsconf", conf, "--certsdir", dirs["certs"],
        "--localcertsdir", dirs["local"], "--etccertsdir", dirs["etc"],
        "--hooksdir", dirs["hooks"]), ("--fresh",))


def test_the_system_store_trusts_the_ca(tmp_path: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the system store step runs as root")
    store = _update_ca_certificates(os.path.join(tmp_path, "sys"))
    ca = CertStore(os.path.join(tmp_path, "ca"))
    ca.ca()
    name = "taskmux local CA (test@host)"
    action = truststore.install_system(ca.ca_cert_path, name, store)
    assert action.done and action.changed, action
    bundle = os.path.join(tmp_path, "sys", "etc", "ca-certificates.crt")
    assert read(ca.ca_cert_path) in read(bundle)
    again = truststore.install_system(ca.ca_cert_path, name, store)
    assert again.done and not again.changed and "already trusted" in again.detail
    # A client trusting the rebuilt bundle accepts the proxy's certificates.
    leaf = ca.leaf("shop")
    handshake(bundle, leaf.cert_path, leaf.key_path, "web.shop.localhost")
    gone = truststore.uninstall_system(name, store, ca.ca_cert_path)
    assert gone.done and gone.changed
    assert read(ca.ca_cert_path) not in read(bundle)
    assert "BEGIN CERTIFICATE" in read(bundle)  # the other anchor stays


def _nssdb(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{folder}", "--empty-password"], check=True,
                   capture_output=True)


def test_nss_databases_of_browsers(tmp_path: str) -> None:
    if shutil.which("certutil") is None:
        pytest.skip("certutil (libnss3-tools) is not installed")
    home = os.path.join(tmp_path, "home")
    chrome = os.path.join(home, ".pki", "nssdb")
    firefox = os.path.join(home, ".mozilla", "firefox", "abcd.default-release")
    for db in (chrome, firefox):
        _nssdb(db)
    os.makedirs(os.path.join(home, ".mozilla", "firefox", "no-db-here"))
    me = pwd.getpwuid(os.getuid())
    user = pwd.struct_passwd((me.pw_name, "x", me.pw_uid, me.pw_gid, "", home, "/bin/sh"))
    ca = CertStore(os.path.join(tmp_path, "ca"))
    ca.ca()
    name = "taskmux local CA (test@host)"
    assert truststore.nss_databases(home) == [chrome, firefox]
    actions = truststore.install_nss(ca.ca_cert_path, name, user)
    assert [(a.done, a.changed) for a in actions] == [(True, True), (True, True)], actions
    for db in (chrome, firefox):
        listing = subprocess.run(["certutil", "-L", "-d", f"sql:{db}"], capture_output=True,
                                 text=True, check=True).stdout
        assert name in listing and "C,," in listing
    assert all(not a.changed for a in truststore.install_nss(ca.ca_cert_path, name, user))
    assert all(a.done and a.changed for a in truststore.uninstall_nss(name, user))
    listing = subprocess.run(["certutil", "-L", "-d", f"sql:{chrome}"], capture_output=True,
                             text=True, check=True).stdout
    assert name not in listing


def test_ca_install_as_a_user_says_what_needs_sudo(tmp_path: str) -> None:
    """The command end to end as an ordinary user: the browsers' database is done, the
    system store is left for sudo, and nothing of the machine's is touched."""
    if shutil.which("certutil") is None:
        pytest.skip("certutil (libnss3-tools) is not installed")
    python, env = user_python_env()
    with throwaway_user() as user:
        state = prepare_home(user, "proxy_https_port = 0\nproxy_http_redirect_port = 0\n"
                             "host_resolver = \"noop\"\n")
        env.update(HOME=user.pw_dir, USER=user.pw_name, TASKMUX_HOME=state)
        nssdb = os.path.join(user.pw_dir, ".pki", "nssdb")
        as_user: dict[str, Any] = {"user": user.pw_uid, "group": user.pw_gid,
                                   "extra_groups": [], "env": env, "cwd": user.pw_dir}
        subprocess.run(["mkdir", "-p", nssdb], check=True, **as_user)
        subprocess.run(["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"],
                       check=True, capture_output=True, **as_user)
        try:
            proc = subprocess.run([python, "-m", "taskmuxctl", "--json", "ca", "install"],
                                  capture_output=True, text=True, timeout=60, **as_user)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            out = json.loads(proc.stdout)
            system, nss = out["actions"]
            assert system["needs_root"] and not system["done"]
            assert "sudo taskmux ca install" in system["detail"]
            assert nss["done"] and nss["changed"] and nssdb in nss["target"]
            assert out["complete"] is False
            listing = subprocess.run(["certutil", "-L", "-d", f"sql:{nssdb}"], text=True,
                                     capture_output=True, check=True, **as_user).stdout
            assert out["name"] in listing
            # The daemon it started runs as the user, and the CA is the user's.
            ca_key = os.path.join(state, "ca", "ca.key")
            assert os.stat(ca_key).st_uid == user.pw_uid
            assert call(os.path.join(state, "ctl.sock"), "daemon.status")["uid"] == user.pw_uid
        finally:
            _stop_daemon(state)


def _stop_daemon(state: str) -> None:
    try:
        pid = int(read(os.path.join(state, "daemon.pid")))
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    wait_until(lambda: pid_gone(pid), what="the user's daemon to stop")


def test_resolver_delegation_files(tmp_path: str) -> None:
    root = str(tmp_path)
    actions = resolver.install("localhost", 5454, root=root, platform="linux", reload=False)
    path = os.path.join(root, "etc/systemd/resolved.conf.d/taskmux-localhost.conf")
    assert actions[0].changed and actions[0].target == path
    assert read(path).endswith("[Resolve]\nDNS=127.0.0.1:5454\nDomains=~localhost\n")
    again = resolver.install("localhost", 5454, root=root, platform="linux", reload=False)
    assert again[0].done and not again[0].changed
    mac = resolver.install("test", 5454, root=root, platform="darwin", reload=False)
    assert read(os.path.join(root, "etc/resolver/test")).endswith(
        "nameserver 127.0.0.1\nport 5454\n")
    assert mac[0].changed
    assert resolver.uninstall("localhost", root=root, platform="linux", reload=False)[0].changed
    assert not os.path.exists(path)
    with open(os.path.join(root, "etc/resolver/mine"), "w") as fh:
        fh.write("nameserver 10.0.0.1\n")
    kept = resolver.uninstall("mine", root=root, platform="darwin", reload=False)
    assert not kept[0].done and "not written by taskmux" in kept[0].detail
    assert os.path.exists(os.path.join(root, "etc/resolver/mine"))


def test_dns_flush_reports_what_it_did(env: dict[str, str]) -> None:
    code, out = run_json(["dns", "flush"], env)
    assert code == 0 and out["actions"]
    assert all({"target", "done", "detail", "needs_root"} <= set(a) for a in out["actions"])


def test_ca_install_creates_the_chromium_database_and_replaces_an_old_ca(tmp_path: str) -> None:
    """Chromium trusts added roots only from ~/.pki/nssdb: with a Chromium-family browser
    installed and no database, install_nss makes one; a CA made anew under the same name
    replaces the old one; nss_trust says what each database holds."""
    if shutil.which("certutil") is None:
        pytest.skip("certutil (libnss3-tools) is not installed")
    home = os.path.join(tmp_path, "home")
    os.makedirs(home)
    me = pwd.getpwuid(os.getuid())
    user = pwd.struct_passwd((me.pw_name, "x", me.pw_uid, me.pw_gid, "", home, "/bin/sh"))
    ca = CertStore(os.path.join(tmp_path, "ca"))
    ca.ca()
    name = "taskmux local CA (test@host)"
    chrome = os.path.join(home, ".pki", "nssdb")
    none = truststore.install_nss(ca.ca_cert_path, name, user, browsers=[])
    assert not os.path.exists(chrome) and "none found" in none[0].detail
    actions = truststore.install_nss(ca.ca_cert_path, name, user, browsers=["chromium"])
    assert [a.target for a in actions] == [f"NSS database {chrome}"] * 2
    assert actions[0].detail.startswith("created") and actions[1].detail == "trusted"
    assert oct(os.stat(chrome).st_mode & 0o777) == "0o700"
    der = truststore._der_of_pem_file(ca.ca_cert_path)
    assert der is not None and truststore.nss_trust(chrome, name, der) == (True, "trusts the CA")
    # The CA made anew (same name, another key): the database holds the old one until
    # install runs again, and doctor's reading says so.
    shutil.rmtree(os.path.join(tmp_path, "ca"))
    fresh = CertStore(os.path.join(tmp_path, "ca"))
    fresh.ca()
    new_der = truststore._der_of_pem_file(fresh.ca_cert_path)
    assert new_der is not None and new_der != der
    assert truststore.nss_trust(chrome, name, new_der) == (
        False, "holds an older taskmux CA under the same name")
    again = truststore.install_nss(fresh.ca_cert_path, name, user, browsers=["chromium"])
    assert [(a.done, a.changed) for a in again] == [(True, True)], again
    assert truststore.nss_trust(chrome, name, new_der)[0] is True
    # Firefox installed with no profile yet: said, not failed.
    firefox = truststore.install_nss(fresh.ca_cert_path, name, user, browsers=["firefox"])
    assert firefox[-1].target == "Firefox" and "start it once" in firefox[-1].detail
