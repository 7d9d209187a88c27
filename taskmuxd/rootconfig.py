"""Root's settings for the privileged half: ``/etc/taskmux/config.toml``.

A daemon started as root for a user decides what it does as root from this file only, never
from the user's ``config.toml`` (which the user writes): which hosts file it writes, under
which top-level domain it writes names or delegates lookups, and which ports below 1024 it
binds, on which addresses. Every key is optional; without the file the defaults hold::

    hosts_file = "/etc/hosts"
    dns_managed_tld = "localhost"
    privileged_ports = [80, 443]
    privileged_addresses = ["127.0.0.1", "::1"]

The file is trusted only when root alone can have written it (see
:func:`taskmuxctl.core.system.rootfiles.path_problem`). ``TASKMUX_SYSTEM_CONFIG`` in root's own
environment names another file (tests aim the privileged half at a throwaway hosts file with
it); that file must pass the same check, so the variable cannot point root at anything a user
wrote. A file that is unsafe or invalid stops the daemon with a message saying why: the
privileged half never guesses.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskmuxctl.core.system import hostnames, rootfiles

SYSTEM_CONFIG = "/etc/taskmux/config.toml"
ENV = "TASKMUX_SYSTEM_CONFIG"
MAX_BYTES = 64 * 1024
DEFAULT_HOSTS_FILE = "/etc/hosts"


class RootConfigError(Exception):
    """The root configuration cannot be trusted or read: the daemon must not start as root."""


class RootConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts_file: str = Field(
        DEFAULT_HOSTS_FILE, description="the only file the privileged half writes names into")
    dns_managed_tld: str = Field(
        "localhost", description="the only domain it writes names under or delegates")
    privileged_ports: list[int] = Field(
        default_factory=lambda: [80, 443],
        description="the ports below 1024 it binds for the user")
    privileged_addresses: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="the addresses it binds those ports on")
    source: str = Field(SYSTEM_CONFIG, exclude=True, description="(where it was read)")

    @field_validator("hosts_file")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not os.path.isabs(value) or "\x00" in value:
            raise ValueError(f"{value!r} is not an absolute path")
        return os.path.normpath(value)

    @field_validator("dns_managed_tld")
    @classmethod
    def _tld(cls, value: str) -> str:
        problem = hostnames.problem_tld(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("privileged_ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 1 <= port <= 1023:
                raise ValueError(f"{port} is not a port below 1024 (only those need root)")
        return value

    @field_validator("privileged_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_address(a)) for a in value]

    def bind_problem(self, address: str, port: int) -> str | None:
        """Why the privileged half must not bind ``address``:``port``, or None."""
        if port == 0 or port >= 1024:
            return None
        if port not in self.privileged_ports:
            return (f"port {port} is below 1024 and {self.source} does not let the daemon bind "
                    f"it as root (privileged_ports = {self.privileged_ports}): use a port "
                    "from that list or one above 1023, or ask root to add it")
        if str(ipaddress.ip_address(address)) not in self.privileged_addresses:
            return (f"{address} is not among the addresses {self.source} lets the daemon bind "
                    f"ports below 1024 on (privileged_addresses = "
                    f"{self.privileged_addresses}): bind a loopback address, or ask root to "
                    "add it")
        return None


def config_path(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(ENV) or SYSTEM_CONFIG


def load(environ: Mapping[str, str] | None = None) -> RootConfig:
    """The root configuration (defaults when the system file does not exist)."""
    path = config_path(environ)
    try:
        raw = rootfiles.read_root_file(path, MAX_BYTES)
    except FileNotFoundError:
        if path != SYSTEM_CONFIG:
            raise RootConfigError(f"{ENV} names {path}, which does not exist") from None
        return RootConfig()
    except rootfiles.UnsafeFile as exc:
        raise RootConfigError(f"the root configuration {path} is not trusted: {exc}; it "
                              "must be a regular file of root's, writable by root only, in "
                              "folders only root can change") from None
    except OSError as exc:
        raise RootConfigError(f"cannot read the root configuration {path}: "
                              f"{exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
        if "source" in data:
            raise RootConfigError(f"{path}: unknown key 'source' (valid keys: hosts_file, "
                                  "dns_managed_tld, privileged_ports, privileged_addresses)")
        return RootConfig.model_validate({**data, "source": path})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RootConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                             for e in exc.errors())
        raise RootConfigError(f"{path}: {problems} (valid keys: hosts_file, "
                              "dns_managed_tld, privileged_ports, "
                              "privileged_addresses)") from None
