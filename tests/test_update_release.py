"""Releases: the signed manifest, the release script (build, keygen, publish to a stand-in for
the GitHub API), and an independent check of the signature with OpenSSL."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from taskmuxctl.core.update import release as rel
from tests.fakegithub import TOKEN, FakeGitHub
from tests.update_fixtures import EPOCH, copy_source, private_key_text

pytestmark = pytest.mark.timeout(300)


def script(*args: str, source: str | None = None, env: dict[str, str] | None = None,
           key: Ed25519PrivateKey | None = None) -> subprocess.CompletedProcess[str]:
    path = os.path.join(source or os.path.dirname(os.path.dirname(__file__)), "packaging",
                        "release.py")
    full = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, **(env or {})}
    if key is not None:
        full["TASKMUX_SIGNING_KEY"] = private_key_text(key)
    return subprocess.run([sys.executable, path, *args], env=full, capture_output=True,
                          text=True, timeout=240)


def build(source: str, out: str, key: Ed25519PrivateKey, *extra: str) -> dict[str, Any]:
    proc = script("build", "--source", source, "--out", out, "--repo", "taskmux/taskmux",
                  "--no-build-isolation", *extra, key=key)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def pem(key: Ed25519PrivateKey, path: str) -> str:
    with open(path, "wb") as fh:
        fh.write(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def openssl_verify(pub: str, data: str, sig: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin",
                           "-in", data, "-sigfile", sig], capture_output=True, text=True)


def test_manifest_is_canonical_and_validated() -> None:
    m = {"version": "1.2.0", "format": 1, "file": "taskmux-1.2.0-py3-none-any.whl", "size": 10,
         "sha256": "a" * 64, "url": "https://example.org/x.whl", "created": "now",
         "requires_python": ">=3.11"}
    raw = rel.canonical(m)
    assert raw == json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    assert rel.parse_manifest(raw).version == "1.2.0"
    cases: list[tuple[dict[str, Any], str]] = [
                         ({"format": 2}, "manifest"), ({"sha256": "xyz"}, "manifest"),
                         ({"file": "../../etc/passwd"}, "manifest"), ({"size": -1}, "manifest"),
                         ({"url": "http://example.org/x.whl"}, "insecure"),
                         ({"url": "ftp://example.org/x.whl"}, "insecure"),
                         ({"size": rel.MAX_PACKAGE_BYTES + 1}, "too_large"),
                         ({"version": "latest"}, "manifest"), ({"size": True}, "manifest")]
    for change, kind in cases:
        with pytest.raises(rel.ReleaseError) as err:
            rel.parse_manifest(rel.canonical({**m, **change}))
        assert err.value.kind == kind, change


def test_signature_checked_against_every_trusted_key() -> None:
    ours, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    raw_pub = ours.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    other = theirs.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    data = b'{"x":1}'
    assert rel.verify_signature(data, ours.sign(data), [other, raw_pub]) == rel.key_id(raw_pub)
    for sig, keys in [(theirs.sign(data), [raw_pub]), (ours.sign(b'{"x":2}'), [raw_pub]),
                      (b"short", [raw_pub]), (ours.sign(data), [])]:
        with pytest.raises(rel.ReleaseError) as err:
            rel.verify_signature(data, sig, keys)
        assert err.value.kind == "signature"


def test_keygen_prints_the_public_key_and_keeps_the_private_one_private(tmp_path: Any) -> None:
    src = copy_source(str(tmp_path / "src"), "1.0.0")
    out = str(tmp_path / "signing.key")
    proc = script("keygen", "--out", out, "--pin", source=src)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with open(out) as fh:
        private = fh.read().strip()
    assert private not in proc.stdout  # written to the file, never printed
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private))
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw,
                                                            PublicFormat.Raw)).decode()
    assert public in proc.stdout
    with open(os.path.join(src, "taskmuxctl", "core", "update", "keys.py")) as fh:
        assert f'    "{public}",\n)' in fh.read()  # --pin wrote it into the copy


@pytest.mark.slow
def test_build_is_reproducible_and_verifiable_with_openssl(tmp_path: Any) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key = Ed25519PrivateKey.generate()
    src = copy_source(str(tmp_path / "src"), "2.0.0")
    first = build(src, str(tmp_path / "a"), key)
    second = build(src, str(tmp_path / "b"), key)
    m = first["manifest"]
    assert m["sha256"] == second["manifest"]["sha256"]  # same source, same bytes
    assert m["version"] == "2.0.0" and m["requires_python"] == ">=3.11"
    assert m["url"] == ("https://github.com/taskmux/taskmux/releases/download/v2.0.0/"
                        "taskmux-2.0.0-py3-none-any.whl")
    files = first["files"]
    assert os.path.getsize(files["wheel"]) == m["size"]
    assert rel.file_sha256(files["wheel"]) == m["sha256"]
    with open(files["manifest"], "rb") as fh:
        assert fh.read() == rel.canonical(m)  # the file is the signed canonical bytes
    # An independent implementation agrees that the signature is good...
    pub = pem(key, str(tmp_path / "pub.pem"))
    ok = openssl_verify(pub, files["manifest"], files["signature"])
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout, ok.stderr
    # ...and that it covers every byte of the manifest,
    tampered = str(tmp_path / "tampered.json")
    with open(tampered, "wb") as fh:
        fh.write(rel.canonical({**m, "sha256": "0" * 64}))
    assert openssl_verify(pub, tampered, files["signature"]).returncode != 0
    # ...and only under the key that made it.
    other = pem(Ed25519PrivateKey.generate(), str(tmp_path / "other.pem"))
    assert openssl_verify(other, files["manifest"], files["signature"]).returncode != 0
    # install.sh carries the verifier and the pinned keys.
    with open(files["installer"]) as fh:
        installer = fh.read()
    for placeholder in ("__TASKMUX_RELEASE_URL__", "__TASKMUX_PINNED_KEYS__", "@@RELEASE_PY@@"):
        assert placeholder not in installer
    assert "def verify_signature" in installer
    assert "https://github.com/taskmux/taskmux/releases/latest/download/release.json" in installer
    assert subprocess.run(["sh", "-n", files["installer"]]).returncode == 0


def test_build_needs_a_signing_key(tmp_path: Any) -> None:
    src = copy_source(str(tmp_path / "src"), "2.0.0")
    proc = script("build", "--source", src, "--out", str(tmp_path / "o"), "--repo", "a/b",
                  env={"TASKMUX_SIGNING_KEY": ""})
    assert proc.returncode == 1 and "TASKMUX_SIGNING_KEY" in proc.stderr


def publish(gh: FakeGitHub, src: str, out: str, key: Ed25519PrivateKey,
            *extra: str) -> subprocess.CompletedProcess[str]:
    return script("publish", "--source", src, "--out", out, "--repo", "taskmux/taskmux",
                  "--api-url", gh.api, "--download-base", f"{gh.site}/download",
                  "--channel-url", gh.channel, "--no-build-isolation", *extra,
                  env={"GITHUB_TOKEN": TOKEN, "GITHUB_SHA": ""}, key=key)


@pytest.mark.slow
def test_publish_to_github_and_refusals(tmp_path: Any, github: FakeGitHub) -> None:
    key = Ed25519PrivateKey.generate()
    raw_pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    src = copy_source(str(tmp_path / "v2"), "2.0.0")
    proc = publish(github, src, str(tmp_path / "o1"), key, "--commit", "c0ffee")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["release"]["tag"] == "v2.0.0"
    [published] = github.releases.values()
    assert not published.draft and github.latest == "v2.0.0"
    assert published.target == "c0ffee"
    assert sorted(published.assets) == ["install.sh", "release.json", "release.json.sig",
                                        "taskmux-2.0.0-py3-none-any.whl"]
    # A client following the channel accepts what the script published.
    manifest = rel.fetch_manifest(github.channel, [raw_pub])
    assert manifest.version == "2.0.0"
    assert manifest.url == github.asset_url("2.0.0", manifest.file)
    path = rel.download(manifest, str(tmp_path), timeout=30)
    assert rel.file_sha256(path) == manifest.sha256

    # The same version again: not newer than the latest release.
    again = publish(github, src, str(tmp_path / "o2"), key)
    assert again.returncode == 1 and "not newer than the latest release 2.0.0" in again.stderr
    # An older one neither.
    old = publish(github, copy_source(str(tmp_path / "v1"), "1.9.0"), str(tmp_path / "o3"), key)
    assert old.returncode == 1 and "not newer" in old.stderr
    # A newer version whose tag exists on another commit.
    github.git_tags["v2.1.0"] = "deadbeef"
    v21 = copy_source(str(tmp_path / "v21"), "2.1.0")
    tagged = publish(github, v21, str(tmp_path / "o4"), key, "--commit", "c0ffee")
    assert tagged.returncode == 1 and "tag v2.1.0 exists" in tagged.stderr
    # A newer version whose tag already has a release (published without becoming latest).
    github.add_release("v2.2.0", {"release.json": b"{}"}, latest=False)
    taken = publish(github, copy_source(str(tmp_path / "v22"), "2.2.0"), str(tmp_path / "o5"),
                    key)
    assert taken.returncode == 1 and "a release for tag v2.2.0 exists" in taken.stderr
    # In CI the tag was pushed first and points at the commit being released: fine.
    ci = publish(github, v21, str(tmp_path / "o6"), key, "--commit", "deadbeef")
    assert ci.returncode == 0, ci.stderr
    assert github.latest == "v2.1.0"
    assert len(github.releases) == 3  # refused attempts left no draft behind


def test_publish_needs_a_token(tmp_path: Any, github: FakeGitHub) -> None:
    src = copy_source(str(tmp_path / "v2"), "2.0.0")
    proc = script("publish", "--source", src, "--out", str(tmp_path / "o"), "--repo",
                  "taskmux/taskmux", "--api-url", github.api,
                  env={"GITHUB_TOKEN": "", "GH_TOKEN": ""}, key=Ed25519PrivateKey.generate())
    assert proc.returncode == 1 and "GITHUB_TOKEN" in proc.stderr
    wrong = script("publish", "--source", src, "--out", str(tmp_path / "o"), "--repo",
                   "taskmux/taskmux", "--api-url", github.api,
                   env={"GITHUB_TOKEN": "wrong"}, key=Ed25519PrivateKey.generate())
    assert wrong.returncode == 1 and "401" in wrong.stderr
    assert not github.releases
