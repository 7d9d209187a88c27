"""A published release as taskmux sees it: the signed manifest, its check, the package download.

A release is a ``release.json`` manifest, ``release.json.sig`` (a raw 64-byte Ed25519 signature
of the manifest's exact bytes) and the package the manifest names. The manifest is published in
canonical form (sorted keys, no spaces, ASCII), so the signature covers the very bytes a client
downloads and nothing has to be re-serialised to check it.

This file is self-contained on purpose: standard library only, plus ``cryptography`` imported
when a signature is checked. The release script inlines it into ``install.sh``, so a first
install verifies a release with the same code as every later update.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FORMAT = 1
MAX_MANIFEST_BYTES = 64 * 1024
MAX_SIGNATURE_BYTES = 1024
MAX_PACKAGE_BYTES = 200 * 1024 * 1024
READ_TIMEOUT = 30.0
USER_AGENT = "taskmux-updater"
SIGNATURE_SUFFIX = ".sig"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

FIELDS: dict[str, type] = {
    "format": int, "version": str, "file": str, "size": int, "sha256": str, "url": str,
    "created": str, "requires_python": str,
}
_VERSION = re.compile(r"^(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?(?:\.post(\d+))?(?:\.dev(\d+))?$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.whl$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SPEC = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*$")

Progress = Callable[[int, int], None]


class ReleaseError(Exception):
    """A release could not be fetched or did not check out. ``kind`` names the failure:
    fetch, insecure, manifest, signature, too_large, truncated, integrity, timeout."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Manifest:
    version: str
    file: str
    size: int
    sha256: str
    url: str
    created: str
    requires_python: str
    raw: bytes  # the exact bytes the signature covers
    key_id: str  # which trusted key signed it

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "file": self.file, "size": self.size,
                "sha256": self.sha256, "url": self.url, "created": self.created,
                "requires_python": self.requires_python}


# -- versions ---------------------------------------------------------------------------------

def version_key(text: str) -> tuple[Any, ...]:
    """A sort key for the PEP 440 versions taskmux uses (X.Y.Z, aN/bN/rcN, .postN, .devN).
    Raises ValueError for anything else."""
    m = _VERSION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a version taskmux understands (like 1.2.3 or 1.3.0rc1)")
    release = [int(p) for p in m.group(1).split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre_kind, pre_n, post, dev = m.group(2), m.group(3), m.group(4), m.group(5)
    if pre_kind:
        pre: tuple[int, ...] = (0, ("a", "b", "rc").index(pre_kind), int(pre_n))
    elif dev is not None and post is None:
        pre = (-1,)  # 1.0.dev1 comes before 1.0a1
    else:
        pre = (1,)
    post_key = (int(post),) if post is not None else (-1,)
    dev_key = (0, int(dev)) if dev is not None else (1, 0)
    return (tuple(release), pre, post_key, dev_key)


def is_version(text: str) -> bool:
    return bool(_VERSION.match(text))


def python_satisfies(spec: str, python: tuple[int, ...]) -> bool:
    """Whether ``python`` (e.g. (3, 11, 7)) meets a ``requires_python`` like ``>=3.11,<4``.
    Raises ValueError for a clause this checker does not understand."""
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = _SPEC.match(clause)
        if not m:
            raise ValueError(f"cannot read requires_python clause {clause!r}")
        op, want = m.group(1), tuple(int(p) for p in m.group(2).split("."))
        have = tuple(python[: len(want)]) if op in ("==", "!=") else tuple(python)
        ok = {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want,
              "==": have == want, "!=": have != want}[op]
        if not ok:
            return False
    return True


# -- the manifest -----------------------------------------------------------------------------

def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes a manifest is published (and signed) as."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def parse_manifest(raw: bytes, key_id: str = "") -> Manifest:
    """Read and validate a manifest (its signature is checked separately, before this)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReleaseError("manifest", f"release.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReleaseError("manifest", "release.json is not a JSON object")
    if data.get("format") != FORMAT:
        raise ReleaseError("manifest", f"release.json has format {data.get('format')!r}; this "
                           f"taskmux reads format {FORMAT}: update it with install.sh")
    for name, kind in FIELDS.items():
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ReleaseError("manifest", f"release.json: {name!r} is missing or not a "
                               f"{kind.__name__}")
    if not is_version(data["version"]):
        raise ReleaseError("manifest", f"release.json: version {data['version']!r} is not valid")
    if not _FILE.match(data["file"]):
        raise ReleaseError("manifest", f"release.json: file {data['file']!r} is not a wheel name")
    if not _SHA256.match(data["sha256"]):
        raise ReleaseError("manifest", "release.json: sha256 is not 64 lower-case hex digits")
    if data["size"] <= 0:
        raise ReleaseError("manifest", "release.json: size must be positive")
    if data["size"] > MAX_PACKAGE_BYTES:
        raise ReleaseError("too_large", f"the package is {data['size']} bytes, more than the "
                           f"{MAX_PACKAGE_BYTES} an update accepts")
    check_url(data["url"])
    return Manifest(version=data["version"], file=data["file"], size=data["size"],
                    sha256=data["sha256"], url=data["url"], created=data["created"],
                    requires_python=data["requires_python"], raw=raw, key_id=key_id)


# -- keys and signatures ----------------------------------------------------------------------

def decode_key(text: str) -> bytes:
    """A public key as written in taskmux (base64 of the 32 raw Ed25519 bytes)."""
    import base64
    import binascii

    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text!r} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{text!r} is {len(raw)} bytes, not a 32-byte Ed25519 public key")
    return raw


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(data: bytes, signature: bytes, keys: list[bytes]) -> str:
    """Return the id of the trusted key whose signature ``signature`` is; raise otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not keys:
        raise ReleaseError("signature", "no trusted signing key: set trusted_keys in "
                           "config.toml or reinstall taskmux")
    if len(signature) != 64:
        raise ReleaseError("signature", f"release.json.sig is {len(signature)} bytes, not a "
                           "64-byte Ed25519 signature")
    for raw in keys:
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
        except InvalidSignature:
            continue
        return key_id(raw)
    ids = ", ".join(key_id(k) for k in keys)
    raise ReleaseError("signature", "release.json is not signed by a trusted key (trusted: "
                       f"{ids}); it was changed or signed by someone else: not installing it")


# -- fetching ---------------------------------------------------------------------------------

def check_url(url: str) -> None:
    """Only https, or plain http to this machine's loopback (a local mirror or a test)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return
    raise ReleaseError("insecure", f"refusing {url!r}: releases are fetched over https only "
                       "(plain http only from 127.0.0.1)")


def cache_busted(url: str, now: float | None = None) -> str:
    stamp = str(int((time.time() if now is None else now) * 1000))
    return url + ("&" if "?" in url else "?") + "ts=" + stamp


def _request(url: str) -> urllib.request.Request:
    return urllib.request.Request(url, headers={
        "User-Agent": USER_AGENT, "Cache-Control": "no-cache", "Pragma": "no-cache",
        "Accept": "application/octet-stream, application/json;q=0.9, */*;q=0.5"})


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def fetch(url: str, limit: int, timeout: float = READ_TIMEOUT) -> bytes:
    """GET a small file whole, refusing more than ``limit`` bytes."""
    check_url(url)
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as resp:
            data = resp.read(limit + 1)
    except TimeoutError:
        raise ReleaseError("timeout", f"{url}: no answer within {timeout:g}s") from None
    except (OSError, ValueError) as exc:
        raise ReleaseError("fetch", f"cannot fetch {url}: {_reason(exc)}") from None
    if len(data) > limit:
        raise ReleaseError("too_large", f"{url} is larger than {limit} bytes")
    return bytes(data)


def fetch_manifest(url: str, keys: list[bytes], timeout: float = READ_TIMEOUT) -> Manifest:
    """Fetch ``url`` (a release.json) and its signature, cache-busted; verify; parse.

    When the signature does not match, both are fetched once more: a release published
    between the two downloads must not look like tampering.
    """
    for attempt in (1, 2):
        raw = fetch(cache_busted(url), MAX_MANIFEST_BYTES, timeout)
        try:
            sig = fetch(cache_busted(_sig_url(url)), MAX_SIGNATURE_BYTES, timeout)
        except ReleaseError as exc:
            if exc.kind == "fetch":
                raise ReleaseError("signature", f"no signature for {url}: {exc.message}; an "
                                   "unsigned release is never installed") from None
            raise
        try:
            kid = verify_signature(raw, sig, keys)
        except ReleaseError:
            if attempt == 2:
                raise
            continue
        return parse_manifest(raw, kid)
    raise AssertionError("unreachable")  # pragma: no cover


def _sig_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path + SIGNATURE_SUFFIX))


def _set_read_timeout(resp: Any, seconds: float) -> None:
    """Shorten the socket timeout of an open response so one read cannot outlive the deadline.
    (http.client keeps the socket at ``resp.fp.raw._sock``; without it the per-read timeout
    given to urlopen still bounds each read.)"""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def download(manifest: Manifest, folder: str, timeout: float,
             progress: Progress | None = None,
             clock: Callable[[], float] = time.monotonic) -> str:
    """Download the package into a temporary file in ``folder`` and check its size and sha256.

    ``timeout`` is a deadline for the whole download. Returns the file's path; on any failure
    the partial file is removed and ReleaseError says what went wrong.
    """
    check_url(manifest.url)
    deadline = clock() + timeout
    fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                resp = urllib.request.urlopen(_request(manifest.url),
                                              timeout=min(READ_TIMEOUT, timeout))
            except TimeoutError:
                raise ReleaseError("timeout", f"{manifest.url}: no answer within "
                                   f"{timeout:g}s") from None
            except (OSError, ValueError) as exc:
                raise ReleaseError("fetch", f"cannot download {manifest.url}: "
                                   f"{_reason(exc)}") from None
            with resp:
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > manifest.size:
                    raise ReleaseError("too_large", f"the server offers {length} bytes for "
                                       f"{manifest.file}; the manifest says {manifest.size}")
                digest = _stream(resp, out, manifest, deadline, timeout, progress, clock)
            if digest != manifest.sha256:
                raise ReleaseError("integrity", f"{manifest.file} does not match the sha256 in "
                                   f"its signed manifest (got {digest}): not installing it")
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return tmp


def _stream(resp: Any, out: Any, manifest: Manifest, deadline: float, timeout: float,
            progress: Progress | None, clock: Callable[[], float]) -> str:
    """Copy the body to ``out`` within the deadline and the stated size; return its sha256."""
    digest = hashlib.sha256()
    done = 0
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise ReleaseError("timeout", f"downloading {manifest.file} took longer than "
                               f"{timeout:g}s ({done} of {manifest.size} bytes)")
        _set_read_timeout(resp, min(READ_TIMEOUT, remaining))
        try:
            chunk = resp.read(min(65536, manifest.size + 1 - done))
        except TimeoutError:
            continue  # the deadline check above reports it
        except (OSError, http.client.HTTPException) as exc:
            raise ReleaseError("truncated", f"downloading {manifest.file} failed after {done} "
                               f"bytes: {_reason(exc)}") from None
        if not chunk:
            break
        done += len(chunk)
        if done > manifest.size:
            raise ReleaseError("too_large", f"{manifest.file} is larger than the "
                               f"{manifest.size} bytes its manifest states")
        digest.update(chunk)
        out.write(chunk)
        if progress is not None:
            progress(done, manifest.size)
    if done != manifest.size:
        raise ReleaseError("truncated", f"{manifest.file} ended after {done} of "
                           f"{manifest.size} bytes")
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- install.sh's entry point -----------------------------------------------------------------

def main(argv: list[str]) -> int:
    """``verify URL FOLDER [KEY...]``: fetch, verify and download a release; print the manifest
    and the package's path as one JSON line. Extra keys also come from $TASKMUX_TRUSTED_KEYS."""
    if len(argv) < 2:
        print("usage: release.py URL FOLDER [KEY...]", file=sys.stderr)
        return 2
    url, folder, texts = argv[0], argv[1], list(argv[2:])
    texts += os.environ.get("TASKMUX_TRUSTED_KEYS", "").replace(",", " ").split()
    try:
        keys = [decode_key(t) for t in texts]
        manifest = fetch_manifest(url, keys)
        if not python_satisfies(manifest.requires_python, sys.version_info[:3]):
            raise ReleaseError("manifest", f"taskmux {manifest.version} needs Python "
                               f"{manifest.requires_python}; this is {sys.version.split()[0]}")
        path = download(manifest, folder, timeout=600.0)
    except (ReleaseError, ValueError) as exc:
        print(f"taskmux install: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({**manifest.as_dict(), "path": path, "key_id": manifest.key_id}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
