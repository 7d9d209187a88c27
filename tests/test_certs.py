"""The local CA and its leaves, checked by OpenSSL itself (the ``openssl`` tool and the ssl
module): the name constraint holds, files are private, leaves are re-minted before expiry."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading

import pytest
from cryptography import x509

from taskmuxctl.core.errors import ClientError
from taskmuxd import certs
from taskmuxd.certstore import CertStore, check_label

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def write_pair(folder: str, pair: certs.KeyPair, name: str) -> tuple[str, str]:
    cert, key = os.path.join(folder, f"{name}.pem"), os.path.join(folder, f"{name}.key")
    with open(cert, "wb") as fh:
        fh.write(pair.cert_pem())
    with open(key, "wb") as fh:
        fh.write(pair.key_pem())
    return cert, key


def openssl_verify(ca: str, leaf: str, name: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl tool is not installed")
    argv = ["openssl", "verify", "-CAfile", ca]
    if name:
        argv += ["-verify_hostname", name]
    return subprocess.run([*argv, leaf], capture_output=True, text=True, timeout=30)


def handshake(ca: str, cert: str, key: str, server_name: str) -> None:
    """A real TLS handshake: a server with ``cert``, a client trusting only ``ca``."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(ca)
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(b"x")
    finally:
        thread.join(10)
        listener.close()


def test_the_ca_is_name_constrained_and_private(tmp_path: str) -> None:
    store = CertStore(os.path.join(tmp_path, "ca"))
    ca = store.ca(NOW)
    assert stat.S_IMODE(os.stat(store.ca_key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    constraints = ca.cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    permitted = {str(n.value) for n in constraints.value.permitted_subtrees or []}
    assert permitted == {"localhost", "127.0.0.0/8", "::1/128"}
    basic = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca and basic.path_length == 0
    assert ca.cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    leaf = store.leaf("shop", NOW)
    assert stat.S_IMODE(os.stat(leaf.key_path).st_mode) == 0o600
    assert leaf.names == ("shop.localhost", "*.shop.localhost")


def test_openssl_refuses_a_leaf_outside_the_constraint(tmp_path: str) -> None:
    now = dt.datetime.now(dt.UTC)
    store = CertStore(os.path.join(tmp_path, "ca"))
    ca = store.ca(now)
    good = store.leaf("shop", now)
    ok = openssl_verify(store.ca_cert_path, good.cert_path, "api.shop.localhost")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The CA signs whatever it is handed; the constraint is what protects real sites.
    for names in (["www.example.com"], ["shop.localhost", "bank.example"], ["10.0.0.1"]):
        cert, key = write_pair(str(tmp_path), certs.new_leaf(ca, names, now), "evil")
        bad = openssl_verify(store.ca_cert_path, cert)
        assert bad.returncode != 0
        assert "subtree violation" in (bad.stdout + bad.stderr), bad.stdout + bad.stderr
        with pytest.raises(ssl.SSLCertVerificationError, match="subtree violation"):
            handshake(store.ca_cert_path, cert, key, names[0])
    handshake(store.ca_cert_path, good.cert_path, good.key_path, "api.shop.localhost")
    loopback, key = write_pair(str(tmp_path), certs.new_leaf(ca, ["127.0.0.1"], now), "lo")
    assert openssl_verify(store.ca_cert_path, loopback).returncode == 0


def test_leaves_are_reminted_before_they_expire(tmp_path: str) -> None:
    store = CertStore(os.path.join(tmp_path, "ca"))
    first = store.leaf("shop", NOW)
    assert first.not_after == NOW + certs.LEAF_LIFETIME
    # Well inside its life: the same leaf, also for a fresh store reading it from disk.
    assert store.leaf("shop", NOW + dt.timedelta(days=30)) == first
    assert CertStore(store.dir).leaf("shop", NOW + dt.timedelta(days=30)) == first
    # Within the renewal window: a new one.
    later = NOW + certs.LEAF_LIFETIME - certs.LEAF_RENEW_BEFORE + dt.timedelta(hours=1)
    second = CertStore(store.dir).leaf("shop", later)
    assert second.not_after > first.not_after
    with open(second.cert_path, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    assert cert.not_valid_before_utc <= later < cert.not_valid_after_utc


def test_a_ca_without_the_configured_tld_is_set_aside(tmp_path: str) -> None:
    folder = os.path.join(tmp_path, "ca")
    old = CertStore(folder).ca(NOW)
    store = CertStore(folder, tld="test")
    new = store.ca(NOW)
    assert new.cert.serial_number != old.cert.serial_number
    assert certs.ca_domains(new.cert) == ["localhost", "test"]
    aside = [n for n in os.listdir(folder) if n.startswith("old-")]
    assert len(aside) == 1 and sorted(os.listdir(os.path.join(folder, aside[0]))) == \
        ["ca.key", "ca.pem"]
    assert store.leaf("shop", NOW).names == ("shop.test", "*.shop.test")


def test_a_corrupt_ca_is_replaced_not_fatal(tmp_path: str) -> None:
    folder = os.path.join(tmp_path, "ca")
    store = CertStore(folder)
    store.ca(NOW)
    with open(store.ca_key_path, "w") as fh:
        fh.write("garbage")
    fresh = CertStore(folder).ca(NOW)
    assert fresh.cert.subject == store.ca(NOW).cert.subject  # same name, new key
    assert any(n.startswith("old-") for n in os.listdir(folder))


@pytest.mark.parametrize("name", ["", "a.b", "-x", "x-", "x" * 64, "under_score", "../etc"])
def test_project_names_that_cannot_be_a_label_are_refused(name: str) -> None:
    with pytest.raises(ClientError, match="cannot be part of a host name"):
        check_label(name)
