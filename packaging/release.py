"""Build, sign and publish a taskmux release; make a signing key.

    python packaging/release.py keygen [--out FILE] [--pin]
    python packaging/release.py build [--out DIR] (--repo OWNER/NAME | --download-base URL)
    python packaging/release.py publish --repo OWNER/NAME [--api-url URL] [--commit SHA]

``build`` makes the wheel reproducibly (SOURCE_DATE_EPOCH: the environment's, else the last
commit's time), writes ``release.json`` (canonical JSON: format, version, file, size, sha256,
url of the versioned asset, created, requires_python), signs those exact bytes with Ed25519
(``release.json.sig``, 64 raw bytes) and writes ``install.sh`` with the verifier and the
pinned keys inlined. ``publish`` does the same and uploads the four files to a GitHub Release
for tag ``vX.Y.Z`` through the REST API: it refuses a version not newer than the latest
release, a tag that already has a release, and a tag that points at another commit. The
release is created as a draft, filled, then published, so clients never see half of it.

The signing key is base64 of the raw 32-byte Ed25519 private key, read from
``$TASKMUX_SIGNING_KEY`` or ``--key-file``; the token from ``$GITHUB_TOKEN`` (or ``$GH_TOKEN``).
The API base comes from ``--api-url``, else ``$GITHUB_API_URL``, else https://api.github.com.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from taskmuxctl.core.update import release as rel  # noqa: E402

KEY_ENV = "TASKMUX_SIGNING_KEY"
ASSET_TYPES = {".whl": "application/zip", ".json": "application/json",
               ".sig": "application/octet-stream", ".sh": "text/x-shellscript"}
RELEASE_PY_MARK = "# @@RELEASE_PY@@"


class ReleaseFailed(Exception):
    pass


# -- keys -------------------------------------------------------------------------------------

def keygen(out: str | None, pin: bool) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = base64.b64encode(key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())).decode()
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    if out:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(private + "\n")
    if pin:
        pin_key(public)
    print(f"public key (key id {rel.key_id(base64.b64decode(public))}):\n  {public}\n")
    print("Commit the public key as PINNED_KEYS in taskmuxctl/core/update/keys.py"
          + (" (done: --pin)" if pin else " (or re-run with --pin)") + ".")
    if out:
        print(f"The private key is in {out} (mode 0600). Store its content as the repository "
              f"secret {KEY_ENV}, then delete the file; never commit it.")
    else:
        print(f"Private key (store it as the repository secret {KEY_ENV}; it is shown once and "
              f"never written anywhere):\n  {private}")
    return 0


def pin_key(public: str) -> None:
    path = os.path.join(ROOT, "taskmuxctl", "core", "update", "keys.py")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    new, count = re.subn(r"(?:# A placeholder[^\n]*\n(?:#[^\n]*\n)*)?"
                         r"PINNED_KEYS: tuple\[str, \.\.\.\] = \(\n(?:    \"[^\"]*\",\n)*\)",
                         f'PINNED_KEYS: tuple[str, ...] = (\n    "{public}",\n)', text)
    if count != 1:
        raise ReleaseFailed(f"cannot find PINNED_KEYS in {path}; edit it by hand")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(new)


def load_signing_key(key_file: str | None) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if key_file:
        with open(key_file, encoding="ascii") as fh:
            text = fh.read()
    else:
        text = os.environ.get(KEY_ENV, "")
    if not text.strip():
        raise ReleaseFailed(f"no signing key: set {KEY_ENV} or pass --key-file (make one with "
                            "`release.py keygen`)")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PrivateKey.from_private_bytes(raw)
    except ValueError:
        raise ReleaseFailed("the signing key is not base64 of a 32-byte Ed25519 private "
                            "key") from None


# -- building ---------------------------------------------------------------------------------

def source_version(source: str) -> str:
    with open(os.path.join(source, "taskmuxctl", "__init__.py"), encoding="utf-8") as fh:
        m = re.search(r'^__version__ = "([^"]+)"', fh.read(), re.M)
    if not m or not rel.is_version(m.group(1)):
        raise ReleaseFailed(f"cannot read a version from {source}/taskmuxctl/__init__.py")
    return m.group(1)


def requires_python(source: str) -> str:
    import tomllib

    with open(os.path.join(source, "pyproject.toml"), "rb") as fh:
        return str(tomllib.load(fh)["project"]["requires-python"])


def source_date_epoch(source: str) -> str:
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return os.environ["SOURCE_DATE_EPOCH"]
    try:
        out = subprocess.run(["git", "-C", source, "log", "-1", "--format=%ct"],
                             capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ReleaseFailed("set SOURCE_DATE_EPOCH (not a git checkout, so the build time "
                            f"cannot come from the last commit: {exc})") from None
    return out.stdout.strip()


def build_wheel(source: str, out: str, isolation: bool) -> str:
    """Build the wheel into ``out`` with a fixed SOURCE_DATE_EPOCH; return its path."""
    with tempfile.TemporaryDirectory(prefix="taskmux-wheel-") as tmp:
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, source]
        if not isolation:
            argv.insert(5, "--no-build-isolation")
        env = {**os.environ, "SOURCE_DATE_EPOCH": source_date_epoch(source),
               "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            raise ReleaseFailed(f"building the wheel failed:\n{proc.stdout}{proc.stderr}")
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            raise ReleaseFailed(f"expected one wheel, got {wheels}")
        path = os.path.join(out, wheels[0])
        shutil.move(os.path.join(tmp, wheels[0]), path)
    return path


def render_install_sh(source: str, release_url: str) -> str:
    with open(os.path.join(source, "packaging", "install.sh"), encoding="utf-8") as fh:
        template = fh.read()
    engine = os.path.join(source, "taskmuxctl", "core", "update")
    with open(os.path.join(engine, "release.py"), encoding="utf-8") as fh:
        verifier = fh.read()
    with open(os.path.join(engine, "keys.py"), encoding="utf-8") as fh:
        m = re.search(r"PINNED_KEYS: tuple\[str, \.\.\.\] = \((.*?)\)", fh.read(), re.S)
    if not m:
        raise ReleaseFailed("cannot find PINNED_KEYS in taskmuxctl/core/update/keys.py")
    keys = ast.literal_eval(f"({m.group(1)})")
    if "\nPYEOF\n" in verifier or RELEASE_PY_MARK not in template:
        raise ReleaseFailed("packaging/install.sh and release.py cannot be combined")
    return (template.replace(RELEASE_PY_MARK, verifier.rstrip("\n"))
            .replace("__TASKMUX_RELEASE_URL__", release_url)
            .replace("__TASKMUX_PINNED_KEYS__", " ".join(keys)))


def build(source: str, out: str, download_base: str, release_url: str, key: Any,
          isolation: bool = True) -> dict[str, Any]:
    """Everything a release holds, in ``out``. Returns the manifest and the files."""
    os.makedirs(out, exist_ok=True)
    version = source_version(source)
    wheel = build_wheel(source, out, isolation)
    name = os.path.basename(wheel)
    manifest = {
        "format": rel.FORMAT, "version": version, "file": name,
        "size": os.path.getsize(wheel), "sha256": rel.file_sha256(wheel),
        "url": f"{download_base.rstrip('/')}/v{version}/{name}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "requires_python": requires_python(source),
    }
    raw = rel.canonical(manifest)
    rel.parse_manifest(raw)  # what clients will accept
    files = {"wheel": wheel, "manifest": os.path.join(out, "release.json"),
             "signature": os.path.join(out, "release.json.sig"),
             "installer": os.path.join(out, "install.sh")}
    with open(files["manifest"], "wb") as fh:
        fh.write(raw)
    with open(files["signature"], "wb") as fh:
        fh.write(key.sign(raw))
    with open(files["installer"], "w", encoding="utf-8") as fh:
        fh.write(render_install_sh(source, release_url))
    os.chmod(files["installer"], 0o755)
    return {"version": version, "manifest": manifest, "files": files}


# -- GitHub -----------------------------------------------------------------------------------

class GitHub:
    def __init__(self, api: str, repo: str, token: str) -> None:
        self.api = api.rstrip("/")
        self.repo = repo
        self.token = token

    def call(self, method: str, url: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        if not url.startswith(("http://", "https://")):
            url = f"{self.api}/repos/{self.repo}{url}"
        req = urllib.request.Request(url, data=body, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "taskmux-release",
            **({"Content-Type": content_type} if body is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                data = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            data, status = exc.read(), exc.code
        except OSError as exc:
            raise ReleaseFailed(f"{method} {url}: {exc}") from None
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode(errors="replace")

    def json(self, method: str, path: str, payload: dict[str, Any] | None = None,
             ok: tuple[int, ...] = (200, 201)) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        status, data = self.call(method, path, body)
        if status not in ok:
            raise ReleaseFailed(f"GitHub: {method} {path} -> HTTP {status}: {data}")
        return data

    def tag_commit(self, tag: str) -> str | None:
        status, ref = self.call("GET", f"/git/ref/tags/{urllib.parse.quote(tag)}")
        if status == 404:
            return None
        if status != 200:
            raise ReleaseFailed(f"GitHub: reading tag {tag} -> HTTP {status}: {ref}")
        obj = ref["object"]
        if obj["type"] == "tag":  # an annotated tag: follow it to the commit
            obj = self.json("GET", f"/git/tags/{obj['sha']}")["object"]
        return str(obj["sha"])


def check_publishable(gh: GitHub, version: str, commit: str | None) -> None:
    tag = f"v{version}"
    status, latest = gh.call("GET", "/releases/latest")
    if status == 200:
        published = str(latest["tag_name"]).removeprefix("v")
        if rel.version_key(version) <= rel.version_key(published):
            raise ReleaseFailed(f"version {version} is not newer than the latest release "
                                f"{published}: bump __version__ in taskmuxctl/__init__.py")
    elif status != 404:
        raise ReleaseFailed(f"GitHub: reading the latest release -> HTTP {status}: {latest}")
    status, existing = gh.call("GET", f"/releases/tags/{tag}")
    if status == 200:
        raise ReleaseFailed(f"a release for tag {tag} exists already ({existing.get('html_url')})"
                            ": tags are immutable, bump the version")
    tagged = gh.tag_commit(tag)
    if tagged is not None and tagged != commit:
        raise ReleaseFailed(f"tag {tag} exists and points at {tagged}, not at the commit being "
                            f"released ({commit or 'unknown: pass --commit'})")


def publish(gh: GitHub, built: dict[str, Any], commit: str | None, notes: str) -> dict[str, Any]:
    version = built["version"]
    payload: dict[str, Any] = {"tag_name": f"v{version}", "name": f"taskmux {version}",
                               "body": notes, "draft": True,
                               "prerelease": not re.fullmatch(r"[\d.]+(\.post\d+)?", version)}
    if commit:
        payload["target_commitish"] = commit
    draft = gh.json("POST", "/releases", payload)
    try:
        upload = str(draft["upload_url"]).split("{", 1)[0]
        for path in built["files"].values():
            name = os.path.basename(path)
            with open(path, "rb") as fh:
                body = fh.read()
            ctype = ASSET_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")
            status, data = gh.call("POST", f"{upload}?name={urllib.parse.quote(name)}", body,
                                   ctype)
            if status != 201:
                raise ReleaseFailed(f"GitHub: uploading {name} -> HTTP {status}: {data}")
        final = gh.json("PATCH", f"/releases/{draft['id']}",
                        {"draft": False, "make_latest": "true"})
    except BaseException:
        gh.call("DELETE", f"/releases/{draft['id']}")  # leave no half-made release behind
        raise
    return {"id": final.get("id"), "url": final.get("html_url"), "tag": f"v{version}"}


# -- command line -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    kg = sub.add_parser("keygen", help="make an Ed25519 signing key pair")
    kg.add_argument("--out", help="write the private key to this new file (mode 0600)")
    kg.add_argument("--pin", action="store_true",
                    help="write the public key into taskmuxctl/core/update/keys.py")
    for name in ("build", "publish"):
        p = sub.add_parser(name, help=f"{name} a release")
        p.add_argument("--source", default=ROOT, help="the checkout to build (default: this one)")
        p.add_argument("--out", default=os.path.join(ROOT, "dist", "release"))
        p.add_argument("--repo", help="OWNER/NAME of the GitHub repository")
        p.add_argument("--download-base",
                       help="where assets are downloaded from (default: "
                       "https://github.com/OWNER/NAME/releases/download)")
        p.add_argument("--channel-url", help="the release.json install.sh follows (default: "
                       "https://github.com/OWNER/NAME/releases/latest/download/release.json)")
        p.add_argument("--key-file", help=f"the signing key (default: ${KEY_ENV})")
        p.add_argument("--no-build-isolation", action="store_true",
                       help="build with the build backend installed here (offline builds)")
    pub = sub.choices["publish"]
    pub.add_argument("--api-url", default=os.environ.get("GITHUB_API_URL")
                     or "https://api.github.com")
    pub.add_argument("--commit", default=os.environ.get("GITHUB_SHA"),
                     help="the commit the tag must point at (default: $GITHUB_SHA)")
    pub.add_argument("--notes", default="", help="release notes")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            return keygen(args.out, args.pin)
        return build_or_publish(args)
    except ReleaseFailed as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1


def build_or_publish(args: argparse.Namespace) -> int:
    if not (args.repo or (args.download_base and args.channel_url)):
        raise ReleaseFailed("give --repo OWNER/NAME (or --download-base and --channel-url)")
    site = f"https://github.com/{args.repo}/releases" if args.repo else ""
    download_base = args.download_base or f"{site}/download"
    channel = args.channel_url or f"{site}/latest/download/release.json"
    key = load_signing_key(args.key_file)
    version = source_version(args.source)
    gh = None
    if args.command == "publish":
        if not args.repo:
            raise ReleaseFailed("publish needs --repo OWNER/NAME")
        token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
        if not token:
            raise ReleaseFailed("set GITHUB_TOKEN (a token allowed to write releases)")
        gh = GitHub(args.api_url, args.repo, token)
        check_publishable(gh, version, args.commit)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    built = build(args.source, args.out, download_base, channel, key,
                  isolation=not args.no_build_isolation)
    result: dict[str, Any] = {"version": version, "manifest": built["manifest"],
                              "files": built["files"]}
    if gh is not None:
        result["release"] = publish(gh, built, args.commit, args.notes)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
