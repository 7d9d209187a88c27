"""What a daemon started as root writes before it drops privileges.

- ``host_resolver = "etc_hosts"``: the hosts file's managed block, from the names the
  user's daemon last routed (``hostnames.json`` in the user's state directory).
- ``host_resolver = "dns_server"``: the resolver delegation to the DNS port just bound (on
  Linux only when systemd-resolved runs: without it the drop-in would do nothing).

Failures are logged, never fatal: the daemon still runs, and its status says what is missing.
"""

from __future__ import annotations

import logging
import os

from taskmuxctl.paths import Paths
from taskmuxd.dns import delegation, hosts
from taskmuxd.dns.subsystem import read_record, record_path
from taskmuxd.listeners import Listeners
from taskmuxd.settings import Settings

log = logging.getLogger("taskmuxd.privileges")


def before_drop(settings: Settings, paths: Paths, bound: Listeners) -> None:
    try:
        if settings.host_resolver == "etc_hosts":
            _hosts_block(settings, paths)
        elif settings.host_resolver == "dns_server" and bound.dns_udp is not None \
                and bound.dns_udp.ok:
            _delegate(settings.dns_managed_tld, bound.dns_udp.port)
    except OSError as exc:
        log.warning("could not prepare name resolution as root: %s", exc)


def _delegate(tld: str, port: int) -> None:
    if not delegation.resolver_present():
        log.warning("no resolver to delegate *.%s to the DNS server on 127.0.0.1:%d "
                    "(systemd-resolved is not running): point your resolver at it yourself",
                    tld, port)
        return
    for action in delegation.install(tld, port):
        level = logging.INFO if action.done else logging.WARNING
        log.log(level, "%s: %s", action.target, action.detail)


def _hosts_block(settings: Settings, paths: Paths) -> None:
    if not os.path.exists(record_path(paths.home)):
        return  # the daemon never routed anything yet: leave the file alone
    names = read_record(paths.home)
    if hosts.write(settings.hosts_file, names):
        log.info("wrote %d names into the taskmux block of %s", len(names),
                 settings.hosts_file)
