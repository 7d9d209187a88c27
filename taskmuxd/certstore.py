"""The CA and leaf certificates on disk, under the state directory's ``ca/``.

``ca/ca.pem`` (public) and ``ca/ca.key`` (0600) are created on first need;
``ca/leaves/{project}.pem`` + ``.key`` are minted per project and re-minted before they
expire. A CA that no longer covers the configured TLD, has expired, or cannot be read is
moved aside (never deleted) and replaced, with a warning that it must be trusted again.
Every file is written atomically; only the daemon writes here. ``certs`` (cryptography,
~25 ms to load) is imported where it is first needed, so a daemon without projects never pays.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskmuxctl.core.errors import ClientError, DaemonError
from taskmuxctl.core.fsutil import atomic_write
from taskmuxctl.core.rpctypes import CaInfo, LeafInfo

if TYPE_CHECKING:
    from taskmuxd.certs import KeyPair

log = logging.getLogger("taskmuxd.ca")

LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_label(project: str) -> str:
    """``project`` as a DNS label, or a ClientError saying why it cannot be one."""
    label = project.lower()
    if not (0 < len(label) <= 63 and set(label) <= LABEL_CHARS and label[0] != "-"
            and label[-1] != "-"):
        raise ClientError(
            f"project name {project!r} cannot be part of a host name: use letters, digits and "
            "inner hyphens (at most 63)", {"project": project})
    return label


@dataclass(frozen=True)
class Leaf:
    project: str
    cert_path: str
    key_path: str
    not_after: dt.datetime
    names: tuple[str, ...]


class CertStore:
    def __init__(self, ca_dir: str, tld: str = "localhost") -> None:
        self.dir = ca_dir
        self.tld = tld
        self.ca_cert_path = os.path.join(ca_dir, "ca.pem")
        self.ca_key_path = os.path.join(ca_dir, "ca.key")
        self.leaves_dir = os.path.join(ca_dir, "leaves")
        self._ca: KeyPair | None = None
        self._leaves: dict[str, Leaf] = {}

    # -- the CA ---------------------------------------------------------------------------

    def ca(self, now: dt.datetime | None = None) -> KeyPair:
        """The CA, created (or replaced, see the module's note) when needed."""
        now = now or utcnow()
        if self._ca is not None and self._ca_usable(self._ca, now):
            return self._ca
        pair = self._read_ca()
        if pair is not None and not self._ca_usable(pair, now):
            self._set_aside(pair, now)
            pair = None
        if pair is None:
            pair = self._create_ca(now)
        self._ca = pair
        return pair

    def _ca_usable(self, pair: KeyPair, now: dt.datetime) -> bool:
        from taskmuxd import certs

        return (self.tld in certs.ca_domains(pair.cert)
                and not certs.needs_renewal(pair.cert, now, certs.LEAF_LIFETIME))

    def _read_ca(self) -> KeyPair | None:
        from taskmuxd import certs

        try:
            with open(self.ca_cert_path, "rb") as fh:
                cert_pem = fh.read()
            with open(self.ca_key_path, "rb") as fh:
                key_pem = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DaemonError(f"cannot read the local CA in {self.dir}: {exc.strerror}; fix "
                              "the permissions (the folder belongs to the daemon's user)",
                              {"path": self.dir}) from exc
        try:
            return certs.load_pair(cert_pem, key_pem)
        except ValueError as exc:
            log.warning("the local CA in %s is unreadable (%s); making a new one", self.dir, exc)
            self._move_aside(time.strftime("%Y%m%dT%H%M%S"))
            return None

    def _set_aside(self, pair: KeyPair, now: dt.datetime) -> None:
        from taskmuxd import certs

        if self.tld not in certs.ca_domains(pair.cert):
            why = f"it does not cover .{self.tld} names"
        else:
            why = f"it expires on {pair.cert.not_valid_after_utc:%Y-%m-%d}"
        log.warning("replacing the local CA (%s); trust the new one with `taskmux ca install`",
                    why)
        self._move_aside(now.strftime("%Y%m%dT%H%M%S"))

    def _move_aside(self, stamp: str) -> None:
        old = os.path.join(self.dir, f"old-{stamp}")
        os.makedirs(old, mode=0o700, exist_ok=True)
        for path in (self.ca_cert_path, self.ca_key_path):
            if os.path.exists(path):
                os.replace(path, os.path.join(old, os.path.basename(path)))
        self._leaves.clear()

    def _create_ca(self, now: dt.datetime) -> KeyPair:
        from taskmuxd import certs

        pair = certs.new_ca(now, self.tld)
        self._ensure_dirs()
        atomic_write(self.ca_key_path, pair.key_pem(), mode=0o600)
        atomic_write(self.ca_cert_path, pair.cert_pem(), mode=0o600)
        log.info("created the local CA %s (SHA-256 %s); trust it with `taskmux ca install`",
                 self.ca_cert_path, certs.fingerprint(pair.cert))
        return pair

    def _ensure_dirs(self) -> None:
        for folder in (self.dir, self.leaves_dir):
            os.makedirs(folder, mode=0o700, exist_ok=True)

    # -- leaves ---------------------------------------------------------------------------

    def leaf_paths(self, project: str) -> tuple[str, str]:
        label = check_label(project)
        base = os.path.join(self.leaves_dir, label)
        return base + ".pem", base + ".key"

    def leaf(self, project: str, now: dt.datetime | None = None, force: bool = False) -> Leaf:
        """The project's current leaf, minted when missing, expiring or ``force``d."""
        from taskmuxd import certs

        now = now or utcnow()
        label = check_label(project)
        ca = self.ca(now)
        cached = self._leaves.get(label)
        if cached is not None and not force and cached.not_after - now > certs.LEAF_RENEW_BEFORE:
            return cached
        cert_path, key_path = self.leaf_paths(label)
        leaf = None if force else self._read_leaf(label, ca, now)
        if leaf is None:
            pair = certs.new_leaf(ca, certs.project_names(label, self.tld), now)
            self._ensure_dirs()
            atomic_write(key_path, pair.key_pem(), mode=0o600)
            atomic_write(cert_path, pair.cert_pem(), mode=0o600)
            leaf = Leaf(label, cert_path, key_path, pair.cert.not_valid_after_utc,
                        tuple(certs.project_names(label, self.tld)))
            log.info("minted the certificate for %s (valid until %s)",
                     ", ".join(leaf.names), f"{leaf.not_after:%Y-%m-%d}")
        self._leaves[label] = leaf
        return leaf

    def _read_leaf(self, label: str, ca: KeyPair, now: dt.datetime) -> Leaf | None:
        """The leaf on disk if it is sound, signed by this CA, for these names and not due."""
        from taskmuxd import certs

        cert_path, key_path = self.leaf_paths(label)
        try:
            with open(cert_path, "rb") as fh:
                cert_pem = fh.read()
            with open(key_path, "rb") as fh:
                key_pem = fh.read()
            pair = certs.load_pair(cert_pem, key_pem)
        except (OSError, ValueError):
            return None
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature

        names = tuple(certs.project_names(label, self.tld))
        try:
            san = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return None
        if (pair.cert.issuer != ca.cert.subject
                or tuple(san.value.get_values_for_type(x509.DNSName)) != names
                or certs.needs_renewal(pair.cert, now)):
            return None
        try:
            pair.cert.verify_directly_issued_by(ca.cert)
        except (InvalidSignature, ValueError, TypeError):
            return None
        return Leaf(label, cert_path, key_path, pair.cert.not_valid_after_utc, names)

    def minted(self) -> list[str]:
        """Projects with a leaf on disk."""
        try:
            names = os.listdir(self.leaves_dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-4] for n in names if n.endswith(".pem"))

    def info(self, now: dt.datetime | None = None) -> CaInfo:
        from taskmuxd import certs

        ca = self.ca(now)
        leaves: list[LeafInfo] = []
        for label in self.minted():
            leaf = self._leaves.get(label) or self._read_leaf(label, ca, now or utcnow())
            if leaf is not None:
                leaves.append({"project": label, "cert": leaf.cert_path,
                               "not_after": leaf.not_after.isoformat(), "names": list(leaf.names)})
        return {
            "cert": self.ca_cert_path,
            "key": self.ca_key_path,
            "subject": ca.cert.subject.rfc4514_string(),
            "fingerprint_sha256": certs.fingerprint(ca.cert),
            "not_after": ca.cert.not_valid_after_utc.isoformat(),
            "permitted": certs.ca_domains(ca.cert) + list(certs.LOOPBACK_NETS),
            "leaves": leaves,
        }
