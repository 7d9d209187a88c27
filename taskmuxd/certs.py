"""Building the local CA and the per-project leaf certificates (cryptography, no I/O).

The CA is ECDSA P-256 and carries a critical name constraint: it may only vouch for names
under ``localhost`` (and the configured TLD) and for loopback addresses, so that even a leaked
key cannot impersonate a real site. Leaves cover ``{project}.{tld}`` and
``*.{project}.{tld}`` for server authentication. Time is an argument, so expiry and re-minting
are tested without waiting.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import socket
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=90)
# Re-mint a leaf once less than this is left; a daily check leaves weeks of margin.
LEAF_RENEW_BEFORE = dt.timedelta(days=30)
BACKDATE = dt.timedelta(hours=1)  # tolerate a client clock slightly behind ours
LOOPBACK_NETS = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class KeyPair:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def permitted_domains(tld: str) -> list[str]:
    """The DNS subtrees the CA may sign for: ``localhost`` plus the configured TLD."""
    out = ["localhost"]
    if tld != "localhost":
        out.append(tld)
    return out


def _ku(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def default_ca_name() -> str:
    try:
        who = f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # no passwd entry for this uid
        who = socket.gethostname()
    return f"taskmux local CA ({who})"


def new_ca(now: dt.datetime, tld: str = "localhost", common_name: str | None = None) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or default_ca_name()),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "taskmux"),
    ])
    permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in permitted_domains(tld)]
    permitted += [x509.IPAddress(ipaddress.ip_network(n)) for n in LOOPBACK_NETS]
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ku(cert_sign=True), critical=True)
        .add_extension(x509.NameConstraints(permitted_subtrees=permitted,
                                            excluded_subtrees=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def new_leaf(ca: KeyPair, names: list[str], now: dt.datetime,
             lifetime: dt.timedelta = LEAF_LIFETIME) -> KeyPair:
    """A server certificate for ``names`` (the first is the subject), signed by ``ca``.

    It signs whatever it is given: the CA's name constraint is what keeps it honest, and a
    test relies on that to show a verifier refusing a name outside it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    sans: list[x509.GeneralName] = []
    dns_names = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
            dns_names.append(name)
    # OpenSSL also checks a host-like common name against the DNS constraint, so an address
    # must not be the common name.
    common_name = dns_names[0] if dns_names else "taskmux loopback"
    not_after = min(now + lifetime, ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_ku(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def project_names(project: str, tld: str) -> list[str]:
    apex = f"{project}.{tld}"
    return [apex, f"*.{apex}"]


def load_pair(cert_pem: bytes, key_pem: bytes) -> KeyPair:
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC private key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError("the key does not belong to the certificate")
    return KeyPair(key, cert)


def ca_domains(cert: x509.Certificate) -> list[str]:
    """The DNS subtrees a CA certificate's name constraint permits."""
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in nc.permitted_subtrees or [] if isinstance(n, x509.DNSName)]


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def needs_renewal(cert: x509.Certificate, now: dt.datetime,
                  margin: dt.timedelta = LEAF_RENEW_BEFORE) -> bool:
    return cert.not_valid_after_utc - now < margin or cert.not_valid_before_utc > now
