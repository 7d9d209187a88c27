"""Trusting the local CA: the system store (Debian/Ubuntu, Fedora/RHEL/Arch, macOS) and the
NSS databases browsers keep (Chrome/Chromium ``~/.pki/nssdb``, Firefox profiles).

Standard library only (``taskmuxctl ca install`` runs it). Each step returns an
:class:`~taskmuxctl.core.system.resolver.Action` saying what was done, or why not and what to run.
The system store needs root; NSS databases belong to the user and are changed as the user
(also when running under sudo), so their files keep their owner.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from taskmuxctl.core.fsutil import atomic_write
from taskmuxctl.core.system.resolver import Action

COMMAND_TIMEOUT = 60


@dataclass(frozen=True)
class SystemStore:
    """Where a system keeps extra trust anchors and how it rebuilds its bundle."""

    kind: Literal["debian", "fedora", "macos"]
    anchor_dir: str
    suffix: str
    refresh: tuple[str, ...] = field(default=())
    # Added to ``refresh`` after a removal (Debian only drops a local anchor with --fresh).
    after_removal: tuple[str, ...] = field(default=())

    def anchor(self, label: str) -> str:
        return os.path.join(self.anchor_dir, f"{label}{self.suffix}")


MACOS_KEYCHAIN = "/Library/Keychains/System.keychain"


def detect_system_store() -> SystemStore | None:
    if sys.platform == "darwin":
        return SystemStore("macos", MACOS_KEYCHAIN, "")
    if shutil.which("update-ca-certificates"):
        return SystemStore("debian", "/usr/local/share/ca-certificates", ".crt",
                           ("update-ca-certificates",), ("--fresh",))
    if shutil.which("update-ca-trust"):
        anchors = "/etc/pki/ca-trust/source/anchors"
        if not os.path.isdir(anchors) and os.path.isdir("/etc/ca-certificates/trust-source"):
            anchors = "/etc/ca-certificates/trust-source/anchors"  # Arch
        return SystemStore("fedora", anchors, ".pem", ("update-ca-trust", "extract"))
    return None


def _run(argv: list[str], user: pwd.struct_passwd | None = None) -> tuple[bool, str]:
    kwargs: dict[str, object] = {}
    if user is not None and os.geteuid() == 0 and user.pw_uid != 0:
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
                  "env": {**os.environ, "HOME": user.pw_dir}}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              **kwargs)  # type: ignore[call-overload]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return proc.returncode == 0, (proc.stderr or proc.stdout).strip()


def _label(name: str) -> str:
    """A file-name-safe label for the CA's anchor file."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower())
    return "-".join(part for part in safe.split("-") if part) or "taskmux"


# -- the system store --------------------------------------------------------------------------

MAX_CERT_BYTES = 64 * 1024
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


def certificate_pem(cert_path: str) -> bytes:
    """The CA certificate to trust, read as hostile input (``sudo taskmux ca install`` reads
    it from the user's state directory as root): a regular file, never through a link, at
    most MAX_CERT_BYTES, holding exactly one PEM certificate and nothing else. ValueError
    says what is wrong."""
    import base64

    from taskmuxctl.core.system import rootfiles

    try:
        raw = rootfiles.read_user_file(cert_path, MAX_CERT_BYTES, None)
    except OSError as exc:
        raise ValueError(f"cannot use {cert_path}: {exc.strerror or exc}") from None
    body = raw.strip()
    if not (body.startswith(_PEM_BEGIN) and body.endswith(_PEM_END)
            and body.count(_PEM_BEGIN) == 1 and body.count(_PEM_END) == 1):
        raise ValueError(f"{cert_path} is not one PEM certificate")
    try:
        base64.b64decode(b"".join(body[len(_PEM_BEGIN):-len(_PEM_END)].split()),
                         validate=True)
    except ValueError:
        raise ValueError(f"{cert_path} is not one PEM certificate (bad base64)") from None
    return body + b"\n"


def install_system(cert_path: str, name: str, store: SystemStore | None) -> Action:
    if store is None:
        return Action("system trust store", False, "no supported trust store found (looked "
                      "for update-ca-certificates, update-ca-trust, macOS security); add "
                      f"{cert_path} to your system's trust anchors by hand")
    try:
        pem = certificate_pem(cert_path)
    except ValueError as exc:
        return Action("system trust store", False, f"{exc}: nothing was trusted")
    if store.kind == "macos":
        return _macos_add(pem)
    target = f"system trust store ({' '.join(store.refresh)})"
    if os.geteuid() != 0:
        return Action(target, False, "needs root: run `sudo taskmux ca install`",
                      needs_root=True)
    anchor = store.anchor(_label(name))
    try:
        with open(anchor, "rb") as fh:
            same = fh.read() == pem
    except OSError:
        same = False
    if same:
        return Action(target, True, f"already trusted ({anchor})")
    os.makedirs(store.anchor_dir, mode=0o755, exist_ok=True)
    atomic_write(anchor, pem, mode=0o644)
    ok, out = _run(list(store.refresh))
    if not ok:
        return Action(target, False, f"copied to {anchor} but `{' '.join(store.refresh)}` "
                      f"failed: {out}")
    return Action(target, True, f"added {anchor} and rebuilt the bundle", changed=True)


def uninstall_system(name: str, store: SystemStore | None, cert_path: str) -> Action:
    if store is None:
        return Action("system trust store", True, "no supported trust store: nothing to do")
    if store.kind == "macos":
        return _macos_remove(cert_path)
    target = f"system trust store ({' '.join(store.refresh)})"
    anchor = store.anchor(_label(name))
    if not os.path.exists(anchor):
        return Action(target, True, "not installed")
    if os.geteuid() != 0:
        return Action(target, False, "needs root: run `sudo taskmux ca uninstall`",
                      needs_root=True)
    os.unlink(anchor)
    argv = [*store.refresh, *store.after_removal]
    ok, out = _run(argv)
    if not ok:
        return Action(target, False, f"removed {anchor} but `{' '.join(argv)}` failed: {out}")
    return Action(target, True, f"removed {anchor} and rebuilt the bundle", changed=True)


def _macos_add(pem: bytes) -> Action:
    import tempfile

    # The checked bytes, from a file of this process's own (not the path the user controls).
    with tempfile.NamedTemporaryFile(suffix=".pem") as tmp:
        tmp.write(pem)
        tmp.flush()
        return _macos_add_file(tmp.name)


def _macos_add_file(cert_path: str) -> Action:
    if os.geteuid() == 0:
        argv = ["security", "add-trusted-cert", "-d", "-r", "trustRoot", "-k", MACOS_KEYCHAIN,
                cert_path]
    else:  # the login keychain; macOS asks for the password in a dialog
        argv = ["security", "add-trusted-cert", "-r", "trustRoot", cert_path]
    ok, out = _run(argv)
    if ok:
        return Action("macOS keychain", True, f"trusted ({' '.join(argv[:2])})", changed=True)
    return Action("macOS keychain", False, f"`{' '.join(argv)}` failed: {out}; try with sudo",
                  needs_root=os.geteuid() != 0)


def _macos_remove(cert_path: str) -> Action:
    ok, out = _run(["security", "remove-trusted-cert", "-d", cert_path])
    if ok:
        return Action("macOS keychain", True, "trust removed", changed=True)
    return Action("macOS keychain", False, f"security remove-trusted-cert failed: {out}",
                  needs_root=os.geteuid() != 0)


# -- NSS databases ------------------------------------------------------------------------------

def nss_databases(home: str) -> list[str]:
    """The NSS databases (``cert9.db`` folders) under ``home`` that browsers use."""
    patterns = [
        ".pki/nssdb",
        ".mozilla/firefox/*",
        "snap/firefox/common/.mozilla/firefox/*",
        "snap/chromium/current/.pki/nssdb",
        "Library/Application Support/Firefox/Profiles/*",
    ]
    found = []
    for pattern in patterns:
        for folder in sorted(glob.glob(os.path.join(home, pattern))):
            if os.path.isfile(os.path.join(folder, "cert9.db")):
                found.append(folder)
    return found


# Browsers that read the user's NSS databases on Linux: the Chromium family trusts added roots
# only from ~/.pki/nssdb; Firefox keeps one database per profile.
CHROMIUM_FAMILY = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                   "google-chrome-beta", "google-chrome-unstable", "brave-browser",
                   "microsoft-edge", "microsoft-edge-stable", "vivaldi", "vivaldi-stable",
                   "opera")
FIREFOX = ("firefox", "firefox-esr")
CHROMIUM_DB = ".pki/nssdb"


def installed_browsers(path: str | None = None) -> list[str]:
    """The browsers on ``path`` (default: PATH) that take their trust from NSS databases."""
    if sys.platform == "darwin":
        return []  # they use the keychain there
    return [b for b in (*CHROMIUM_FAMILY, *FIREFOX) if shutil.which(b, path=path)]


def install_nss(cert_path: str, name: str, user: pwd.struct_passwd,
                browsers: list[str] | None = None) -> list[Action]:
    """Trust the CA in every NSS database of the user's; first create ~/.pki/nssdb when a
    browser that reads it (or Firefox, for which it is the shared fallback) is installed and
    it does not exist yet, since Chromium would otherwise trust nothing taskmux added."""
    found = installed_browsers() if browsers is None else browsers
    created: list[Action] = []
    if found and not _is_db(os.path.join(user.pw_dir, CHROMIUM_DB)) \
            and shutil.which("certutil") is not None:
        created.append(_create_chromium_db(user, found))
    actions = created + _nss(user, lambda db: ["certutil", "-A", "-d", f"sql:{db}", "-t", "C,,",
                                               "-n", name, "-i", cert_path],
                             "trusted", install=True, name=name, cert_path=cert_path)
    if any(b in FIREFOX for b in found) and not any(
            "/firefox/" in db for db in nss_databases(user.pw_dir)):
        actions.append(Action("Firefox", True, "installed but has no profile yet: start it "
                              "once, then run `taskmux ca install` again"))
    return actions


def _is_db(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "cert9.db"))


def _create_chromium_db(user: pwd.struct_passwd, browsers: list[str]) -> Action:
    db = os.path.join(user.pw_dir, CHROMIUM_DB)
    target = f"NSS database {db}"
    ok, out = _run(["mkdir", "-p", "-m", "700", db], user)
    if ok:
        ok, out = _run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], user)
    if not ok:
        return Action(target, False, f"cannot create it ({out}); {', '.join(browsers)} will "
                      "not trust the CA until it exists")
    return Action(target, True, f"created (for {', '.join(browsers)})", changed=True)


def uninstall_nss(name: str, user: pwd.struct_passwd) -> list[Action]:
    return _nss(user, lambda db: ["certutil", "-D", "-d", f"sql:{db}", "-n", name], "removed",
                install=False, name=name)


def _nss(user: pwd.struct_passwd, argv_for: Callable[[str], list[str]], verb: str, *,
         install: bool, name: str, cert_path: str | None = None) -> list[Action]:
    dbs = nss_databases(user.pw_dir)
    if not dbs:
        return [Action("NSS databases", True, "none found (no Firefox profile or "
                       "~/.pki/nssdb): nothing to do")]
    if shutil.which("certutil") is None:
        hint = ("`brew install nss`" if sys.platform == "darwin"
                else "`sudo apt install libnss3-tools` or `sudo dnf install nss-tools`")
        return [Action(f"NSS database {db}", False, f"certutil is missing: install it "
                       f"({hint}) and run this again") for db in dbs]
    want = _der_of_pem_file(cert_path) if cert_path else None
    actions = []
    for db in dbs:
        held = nss_certificate(db, name, user)
        present = held is not None
        if install and present and want is not None and held != want:
            # An earlier CA under the same name (the CA was made anew): replace it.
            _run(["certutil", "-D", "-d", f"sql:{db}", "-n", name], user)
            present = False
        if present == install:
            actions.append(Action(f"NSS database {db}", True,
                                  "already trusted" if install else "not installed"))
            continue
        ok, out = _run(argv_for(db), user)
        actions.append(Action(f"NSS database {db}", ok, verb if ok else f"certutil failed: "
                              f"{out}", changed=ok))
    return actions


def nss_certificate(db: str, name: str, user: pwd.struct_passwd | None = None) -> bytes | None:
    """The DER certificate ``db`` holds under ``name`` (None: none)."""
    ok, out = _run(["certutil", "-L", "-d", f"sql:{db}", "-n", name, "-a"], user)
    if not ok:
        return None
    return _der_of_pem(out.encode())


def nss_trust(db: str, name: str, cert_der: bytes) -> tuple[bool, str]:
    """Whether ``db`` trusts ``cert_der`` as a CA for web sites (as a browser reading it
    would), and what it holds instead when not."""
    ok, listing = _run(["certutil", "-L", "-d", f"sql:{db}"])
    if not ok:
        return False, f"certutil cannot read it: {listing}"
    flags = None
    for line in listing.splitlines():
        label, _, attrs = line.rstrip().rpartition(" ")
        if label.strip() == name:
            flags = attrs
    if flags is None:
        return False, "does not hold the taskmux CA"
    if nss_certificate(db, name) != cert_der:
        return False, "holds an older taskmux CA under the same name"
    if "C" not in flags.split(",")[0]:
        return False, f"holds the CA without trusting it for web sites (flags {flags})"
    return True, "trusts the CA"


def _der_of_pem(pem: bytes) -> bytes | None:
    import base64

    begin = pem.find(_PEM_BEGIN)
    end = pem.find(_PEM_END)
    if begin < 0 or end < 0:
        return None
    try:
        return base64.b64decode(b"".join(pem[begin + len(_PEM_BEGIN):end].split()))
    except ValueError:
        return None


def _der_of_pem_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return _der_of_pem(fh.read())
    except OSError:
        return None


def system_trusts(cert_der: bytes) -> bool | None:
    """Whether the system's default trust bundle holds this certificate (None: cannot tell,
    e.g. on macOS where trust lives in the keychain)."""
    import base64
    import ssl

    paths = ssl.get_default_verify_paths()
    bundles = [p for p in (paths.cafile, paths.openssl_cafile) if p and os.path.isfile(p)]
    if not bundles:
        return None
    marker = b"-----BEGIN CERTIFICATE-----"
    for bundle in bundles:
        try:
            with open(bundle, "rb") as fh:
                text = fh.read()
        except OSError:
            continue
        for block in text.split(marker)[1:]:
            body = block.split(b"-----END CERTIFICATE-----", 1)[0]
            try:
                if base64.b64decode(b"".join(body.split())) == cert_der:
                    return True
            except ValueError:
                continue
    return False
