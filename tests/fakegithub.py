"""A loopback HTTP server standing in for GitHub Releases: the download URLs clients follow
(``/OWNER/REPO/releases/latest/download/NAME`` redirects to ``.../download/vX.Y.Z/NAME``), the
REST API the release script publishes through (``/api/repos/...``) and the upload host
(``/uploads/...``). Faults can be set per asset to serve it wrong, cut short, too long or slowly.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from taskmuxctl.core.update import release as rel

TOKEN = "test-token"


def public_key_text(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@dataclass
class Fault:
    """How to serve one asset wrongly."""

    truncate: int | None = None  # send this many bytes, then close (Content-Length stays full)
    stall: float | None = None  # after half the body, wait this long before the rest
    replace: bytes | None = None  # serve these bytes instead
    delay: float | None = None  # wait before answering at all


@dataclass
class Release:
    id: int
    tag: str
    draft: bool = False
    assets: dict[str, bytes] = field(default_factory=dict)
    target: str | None = None


class FakeGitHub:
    def __init__(self, owner: str = "taskmux", repo: str = "taskmux") -> None:
        self.owner, self.repo = owner, repo
        self.releases: dict[int, Release] = {}
        self.latest: str | None = None
        self.git_tags: dict[str, str] = {}  # tag -> commit
        self.faults: dict[str, Fault] = {}  # asset name -> fault
        self.log: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._next_id = 1
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- URLs -----------------------------------------------------------------------------

    @property
    def site(self) -> str:
        return f"{self.base}/{self.owner}/{self.repo}/releases"

    @property
    def channel(self) -> str:
        return f"{self.site}/latest/download/release.json"

    def asset_url(self, version: str, name: str) -> str:
        return f"{self.site}/download/v{version}/{name}"

    @property
    def api(self) -> str:
        return f"{self.base}/api"

    # -- publishing (the test's side) -----------------------------------------------------

    def add_release(self, tag: str, assets: dict[str, bytes], latest: bool = True) -> Release:
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            self.releases[rid] = Release(rid, tag, assets=dict(assets))
            if latest:
                self.latest = tag
        return self.releases[rid]

    def publish(self, version: str, wheel: str, key: Ed25519PrivateKey, *,
                edit: Callable[[dict[str, Any]], None] | None = None,
                sign_with: Ed25519PrivateKey | None = None, signature: bool = True,
                latest: bool = True) -> dict[str, Any]:
        """Publish a wheel as release ``v{version}``, its manifest signed by ``key`` (or
        ``sign_with``); ``edit`` may change the manifest before it is signed."""
        with open(wheel, "rb") as fh:
            body = fh.read()
        name = wheel.rsplit("/", 1)[-1]
        manifest = {"format": rel.FORMAT, "version": version, "file": name, "size": len(body),
                    "sha256": rel.file_sha256(wheel), "url": self.asset_url(version, name),
                    "created": "2025-01-01T00:00:00Z", "requires_python": ">=3.11"}
        if edit is not None:
            edit(manifest)
        raw = rel.canonical(manifest)
        assets = {name: body, "release.json": raw}
        if signature:
            assets["release.json.sig"] = (sign_with or key).sign(raw)
        self.add_release(f"v{version}", assets, latest)
        return manifest

    # -- the server -----------------------------------------------------------------------

    def __enter__(self) -> FakeGitHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gh = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                gh.log.append(f"{self.command} {self.path}")

            def do_GET(self) -> None:
                gh.route(self, "GET")

            def do_POST(self) -> None:
                gh.route(self, "POST")

            def do_PATCH(self) -> None:
                gh.route(self, "PATCH")

            def do_DELETE(self) -> None:
                gh.route(self, "DELETE")

        return Handler

    def route(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(h.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        try:
            if parts[:1] == ["api"]:
                self._api(h, method, parts[1:], body)
            elif parts[:1] == ["uploads"]:
                self._upload(h, parts[1:], urllib.parse.parse_qs(url.query), body)
            else:
                self._download(h, parts)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
              ctype: str = "application/json", headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _json(self, h: BaseHTTPRequestHandler, status: int, data: Any) -> None:
        self._send(h, status, json.dumps(data).encode())

    def _download(self, h: BaseHTTPRequestHandler, parts: list[str]) -> None:
        if len(parts) == 6 and parts[2:5] == ["releases", "latest", "download"]:
            if self.latest is None:
                return self._send(h, 404, b"Not Found", "text/plain")
            target = f"/{parts[0]}/{parts[1]}/releases/download/{self.latest}/{parts[5]}"
            return self._send(h, 302, b"", "text/plain", {"Location": target})
        if len(parts) != 6 or parts[2:4] != ["releases", "download"]:
            return self._send(h, 404, b"Not Found", "text/plain")
        tag, name = parts[4], parts[5]
        release = next((r for r in reversed(self.releases.values())
                        if r.tag == tag and not r.draft), None)  # the newest one wins
        if release is None or name not in release.assets:
            return self._send(h, 404, b"Not Found", "text/plain")
        body = release.assets[name]
        fault = self.faults.get(name)
        if fault is None:
            return self._send(h, 200, body, "application/octet-stream")
        if fault.delay and self.stop.wait(fault.delay):
            return None
        if fault.replace is not None:
            body = fault.replace
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if fault.truncate is not None:
            h.wfile.write(body[: fault.truncate])
            h.wfile.flush()
            h.close_connection = True
            return None
        if fault.stall is not None:
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            if self.stop.wait(fault.stall):
                return None
            h.wfile.write(body[len(body) // 2:])
            return None
        h.wfile.write(body)
        return None

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        if h.headers.get("Authorization") == f"Bearer {TOKEN}":
            return True
        self._json(h, 401, {"message": "Bad credentials"})
        return False

    def _release_json(self, r: Release) -> dict[str, Any]:
        return {"id": r.id, "tag_name": r.tag, "draft": r.draft,
                "html_url": f"{self.site}/tag/{r.tag}",
                "upload_url": f"{self.base}/uploads/repos/{self.owner}/{self.repo}/releases/"
                              f"{r.id}/assets{{?name,label}}",
                "assets": [{"name": n, "size": len(b)} for n, b in r.assets.items()]}

    def _api(self, h: BaseHTTPRequestHandler, method: str, parts: list[str], body: bytes) -> None:
        if not self._authorized(h):
            return None
        if parts[:3] != ["repos", self.owner, self.repo]:
            return self._json(h, 404, {"message": "Not Found"})
        rest = parts[3:]
        published = [r for r in self.releases.values() if not r.draft]
        if method == "GET" and rest == ["releases", "latest"]:
            found = next((r for r in published if r.tag == self.latest), None)
            return self._json(h, 200, self._release_json(found)) if found else \
                self._json(h, 404, {"message": "Not Found"})
        if method == "GET" and rest[:2] == ["releases", "tags"]:
            found = next((r for r in published if r.tag == rest[2]), None)
            return self._json(h, 200, self._release_json(found)) if found else \
                self._json(h, 404, {"message": "Not Found"})
        if method == "GET" and rest[:3] == ["git", "ref", "tags"]:
            sha = self.git_tags.get(rest[3])
            return self._json(h, 200, {"object": {"sha": sha, "type": "commit"}}) if sha else \
                self._json(h, 404, {"message": "Not Found"})
        if method == "POST" and rest == ["releases"]:
            data = json.loads(body)
            if any(r.tag == data["tag_name"] for r in self.releases.values()):
                return self._json(h, 422, {"message": "Validation Failed: already_exists"})
            with self._lock:
                rid = self._next_id
                self._next_id += 1
                self.releases[rid] = Release(rid, data["tag_name"], draft=bool(data["draft"]),
                                             target=data.get("target_commitish"))
            return self._json(h, 201, self._release_json(self.releases[rid]))
        if rest[:1] == ["releases"] and len(rest) == 2 and rest[1].isdigit():
            release = self.releases.get(int(rest[1]))
            if release is None:
                return self._json(h, 404, {"message": "Not Found"})
            if method == "PATCH":
                data = json.loads(body)
                release.draft = bool(data.get("draft", release.draft))
                if not release.draft and data.get("make_latest", "true") == "true":
                    self.latest = release.tag
                    self.git_tags.setdefault(release.tag, release.target or "0" * 40)
                return self._json(h, 200, self._release_json(release))
            if method == "DELETE":
                del self.releases[release.id]
                return self._send(h, 204)
        return self._json(h, 404, {"message": "Not Found"})

    def _upload(self, h: BaseHTTPRequestHandler, parts: list[str], query: dict[str, list[str]],
                body: bytes) -> None:
        if not self._authorized(h):
            return None
        # repos/OWNER/REPO/releases/ID/assets
        release = self.releases.get(int(parts[4])) if len(parts) == 6 and parts[4].isdigit() \
            else None
        if release is None or "name" not in query:
            return self._json(h, 404, {"message": "Not Found"})
        release.assets[query["name"][0]] = body
        return self._json(h, 201, {"name": query["name"][0], "size": len(body)})


@contextlib.contextmanager
def fake_github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as gh:
        yield gh
