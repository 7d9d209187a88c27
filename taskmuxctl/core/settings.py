"""The global settings, ``config.toml``: a pydantic model where every key has a default.

Read with tomllib; ``set_value`` edits with tomlkit so the user's comments and layout stay.
Unknown keys are refused, naming the key and the valid ones.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskmuxctl.core import settingsfile
from taskmuxctl.core.errors import SettingsError
from taskmuxctl.core.fsutil import atomic_write
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.update import DEFAULT_RELEASE_URL


class Settings(BaseModel):
    """Machine-wide settings of taskmux. Every field is optional in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    auto_start_daemon: bool = Field(
        True, description="taskmuxctl starts the daemon when a command needs it"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="the daemon's log level"
    )
    shutdown_timeout: float = Field(
        10.0, gt=0, le=300, description="seconds in-flight calls get to finish at shutdown"
    )
    health_check_interval: float = Field(
        30.0, gt=0, description="seconds between the daemon's safety-net sweeps of all tasks"
    )
    resource_sample_interval: float = Field(
        1.0, ge=0, le=60,
        description="seconds between samples of each task's CPU, memory and ports (0: off)"
    )
    api_port: int = Field(
        8765, ge=0, le=65535,
        description="accepted for taskmux 0.6 configs; unused (the API is ctl.sock)",
    )
    tmux_socket: str | None = Field(
        None, description="tmux -L socket name for task sessions (default: the user's server)"
    )
    dependency_timeout: float = Field(
        120.0, gt=0, description="seconds a task waits for what it depends_on to be ready"
    )
    warm_runner_seconds: float = Field(
        600.0, ge=0, le=86400,
        description="seconds a stopped task's runner stays in its window, idle, so that the "
        "next start is an order to it rather than a new process (0: it ends with the task)",
    )
    proxy_enabled: bool = Field(
        True, description="serve https://{host}.{project}.localhost through the TLS proxy"
    )
    proxy_https_port: int = Field(
        443, ge=0, le=65535, description="the proxy's HTTPS port (0: any free port)"
    )
    proxy_http_redirect_port: int = Field(
        80, ge=0, le=65535,
        description="plain HTTP port answering 301 to the https URL (0: no redirect)",
    )
    proxy_bind: list[str] = Field(
        ["127.0.0.1", "::1"],
        description="addresses the proxy listens on (default: loopback, IPv4 and IPv6)",
    )
    host_resolver: Literal["etc_hosts", "dns_server", "noop"] = Field(
        "etc_hosts",
        description="how *.localhost names resolve: a managed /etc/hosts block, taskmux's "
        "own DNS server, or nothing",
    )
    dns_server_port: int = Field(
        5454, ge=0, le=65535,
        description="UDP and TCP port of the DNS server on 127.0.0.1 (dns_server only; "
        "0: any free port)",
    )
    dns_managed_tld: str = Field(
        "localhost", min_length=1,
        description="the top-level domain of task URLs and of the DNS server's answers",
    )
    hosts_file: str = Field(
        "/etc/hosts", min_length=1,
        description="the hosts file the etc_hosts resolver manages (a daemon started as root "
        "writes root's own instead: hosts_file in /etc/taskmux/config.toml)",
    )
    proxy_max_connections: int = Field(
        1024, ge=1, le=1_000_000,
        description="most client connections the proxy holds at once, handshakes included "
        "(lowered to fit the daemon's descriptor limit); more are closed at once",
    )
    proxy_max_connections_per_client: int = Field(
        512, ge=1, le=1_000_000,
        description="most proxy connections from one client at once (a local user, known "
        "by uid on Linux; else an address)",
    )
    proxy_handshake_timeout: float = Field(
        10.0, gt=0, le=300, description="seconds a client gets to complete its TLS handshake"
    )
    dns_max_tcp_connections: int = Field(
        128, ge=1, le=1_000_000,
        description="most TCP connections the DNS server holds at once (lowered to fit the "
        "daemon's descriptor limit); more are closed at once",
    )
    dns_max_tcp_connections_per_client: int = Field(
        32, ge=1, le=1_000_000,
        description="most DNS TCP connections from one client at once (a local user by "
        "uid, or an address)",
    )
    dns_tcp_idle_timeout: float = Field(
        10.0, gt=0, le=300,
        description="seconds a DNS TCP connection may wait for its next query before it is "
        "closed",
    )

    @field_validator("proxy_bind", mode="before")
    @classmethod
    def _bind_addresses(cls, value: Any) -> Any:
        import ipaddress

        if isinstance(value, str):  # taskmux 0.6 wrote one address as a string
            value = [value]
        if not isinstance(value, list):
            return value  # the type check names the problem
        addrs = [str(a) for a in value]
        if not addrs:
            raise ValueError("give at least one address, e.g. \"127.0.0.1\"")
        for addr in addrs:
            ipaddress.ip_address(addr)  # ValueError names the bad one
        return addrs

    @field_validator("dns_managed_tld")
    @classmethod
    def _tld(cls, value: str) -> str:
        tld = value.strip().strip(".").lower()
        allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
        labels = tld.split(".")
        if not tld or not all(lab and set(lab) <= allowed and lab[0] != "-" and lab[-1] != "-"
                              for lab in labels):
            raise ValueError(f"{value!r} is not a domain name such as \"localhost\"")
        return tld
    auto_update: bool | Literal["wave"] = Field(
        False, description="the daemon installs new signed releases by itself (\"wave\": "
        "only once a release has been out for update_wave_delay seconds)"
    )
    update_wave_delay: float = Field(
        86400.0, ge=0, le=90 * 86400,
        description="with auto_update = \"wave\": seconds a release must have been out "
        "(from its signed publish time) before this machine takes it; give each group of "
        "machines its own (canaries 0, the rest later)",
    )
    update_check_interval: float = Field(
        300.0, ge=1, le=7 * 86400,
        description="seconds between the auto-updater's checks (jittered by +-20%)",
    )
    update_probation: float = Field(
        10.0, ge=0, le=600,
        description="seconds a daemon restarted directly by an update (no service manager) "
        "must stay up before the update counts as done; if it dies sooner the update is "
        "rolled back (0: no probation)",
    )
    release_url: str = Field(
        DEFAULT_RELEASE_URL, min_length=1,
        description="the release manifest (release.json) updates follow",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="extra Ed25519 public keys (base64) trusted to sign releases, for forks",
    )

    @field_validator("trusted_keys")
    @classmethod
    def _keys_are_ed25519(cls, value: list[str]) -> list[str]:
        if not value:  # the default: the release code (an HTTP client) stays unloaded
            return value
        from taskmuxctl.core.update.release import decode_key

        for text in value:
            decode_key(text)  # ValueError names the bad key
        return value

    @field_validator("release_url")
    @classmethod
    def _release_url_is_http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("release_url must be an https:// URL of a release.json")
        return value


class SettingsFileError(SettingsError):
    pass


def _unknown_key_message(key: str) -> str:
    valid = sorted(Settings.model_fields)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown setting {key!r}{hint}; valid settings: {', '.join(valid)}"


def _describe(exc: ValidationError, source: str) -> SettingsError:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            return SettingsError(f"{source}: {_unknown_key_message(key)}",
                                 {"key": key, "valid": sorted(Settings.model_fields)},
                                 code=Code.SETTINGS_UNKNOWN_KEY)
        problems.append({"key": key, "error": err["msg"], "input": repr(err.get("input"))})
    text = "; ".join(f"{p['key']}: {p['error']} (got {p['input']})" for p in problems)
    return SettingsError(f"{source}: {text}", {"problems": problems})


def validate(raw: dict[str, Any], source: str) -> Settings:
    """The settings in ``raw`` (TOML values read from ``source``), checked against the model."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise _describe(exc, source) from None


def parse(text: str, source: str) -> Settings:
    return validate(settingsfile.parse_toml(text, source), source)


MAX_SETTINGS_BYTES = settingsfile.MAX_SETTINGS_BYTES


def load(path: str) -> Settings:
    """The settings in ``path``, all defaults when the file does not exist. Only a regular
    file of at most 1 MiB is read, opened without blocking (a FIFO is refused, not waited on)."""
    return validate(settingsfile.read(path), path)


def overrides(path: str) -> list[str]:
    """Keys the file sets explicitly (the rest are defaults)."""
    try:
        with open(path, "rb") as fh:
            return sorted(tomllib.load(fh))
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return []


def _coerce(text: str) -> Any:
    """A command-line value as TOML would read it, else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_value(path: str, key: str, text: str) -> Settings:
    """Validate ``key = text`` against the model and write it, keeping comments and layout.

    An empty ``text`` (or ``default``) removes the key so it falls back to its default.
    """
    import tomlkit

    if key not in Settings.model_fields:
        raise SettingsError(_unknown_key_message(key),
                            {"key": key, "valid": sorted(Settings.model_fields)},
                            code=Code.SETTINGS_UNKNOWN_KEY)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = tomlkit.parse(fh.read())
    except FileNotFoundError:
        doc = tomlkit.document()
    except tomlkit.exceptions.ParseError as exc:
        raise SettingsError(f"{path}: not valid TOML, fix it by hand first: {exc}") from None
    current = doc.unwrap()
    if text.strip() in ("", "default"):
        current.pop(key, None)
        if key in doc:
            del doc[key]
    else:
        current[key] = _coerce(text)
    try:
        settings = Settings.model_validate(current)
    except ValidationError as exc:
        raise _describe(exc, path) from None
    if key in current:
        value = settings.model_dump(mode="json")[key]
        if value is None:
            if key in doc:
                del doc[key]
        else:
            doc[key] = value
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write(path, tomlkit.dumps(doc), mode=0o600)
    return settings


def describe_fields() -> list[dict[str, Any]]:
    """Every key with its default and description, for ``config show`` and the README."""
    out = []
    for name, field in Settings.model_fields.items():
        out.append({"key": name, "default": field.get_default(call_default_factory=True),
                    "description": field.description})
    return out
