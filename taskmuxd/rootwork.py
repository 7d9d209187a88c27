"""What a daemon started as root writes before it drops privileges.

- ``host_resolver = "etc_hosts"``: the managed block of root's hosts file (``hosts_file`` of
  the root configuration, ``/etc/hosts`` by default; never the user's ``hosts_file``), from
  the names the user's daemon last routed (``hostnames.json`` in the user's state directory,
  read as the user, size-capped, each name checked again where it is written).
- ``host_resolver = "dns_server"``: the resolver delegation to the DNS port just bound (on
  Linux only when systemd-resolved runs: without it the drop-in would do nothing), and only
  for the root configuration's ``dns_managed_tld``.

Everything the user wrote is input to check, never an instruction: see SECURITY.md. Failures
are logged, never fatal: the daemon still runs, and its status says what is missing.
"""

from __future__ import annotations

import logging
import os

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.settings import Settings
from taskmuxctl.core.system import hostsfile, resolver
from taskmuxctl.core.system.hostsrecord import read_record, record_path
from taskmuxd import cgroups
from taskmuxd.listeners import Listeners
from taskmuxd.privileges import Target, as_user
from taskmuxd.rootconfig import RootConfig

log = logging.getLogger("taskmuxd.privileges")


def before_drop(settings: Settings, paths: Paths, bound: Listeners, target: Target,
                root: RootConfig) -> None:
    cgroups.hand_over(target.uid, target.gid)
    if settings.hosts_file != root.hosts_file:
        log.warning("hosts_file = %r in %s is not used as root: a daemon started as root "
                    "writes only root's hosts file %s (hosts_file in %s)", settings.hosts_file,
                    paths.config, root.hosts_file, root.source)
    if settings.dns_managed_tld != root.dns_managed_tld and settings.host_resolver != "noop":
        log.warning("dns_managed_tld = %r in %s is not the domain root allows (%r, set in "
                    "%s): nothing is written or delegated as root", settings.dns_managed_tld,
                    paths.config, root.dns_managed_tld, root.source)
        return
    try:
        if settings.host_resolver == "etc_hosts":
            _hosts_block(root, paths, target)
        elif settings.host_resolver == "dns_server" and bound.dns_udp is not None \
                and bound.dns_udp.ok:
            _delegate(root.dns_managed_tld, bound.dns_udp.port)
    except OSError as exc:
        log.warning("could not prepare name resolution as root: %s", exc)


def _delegate(tld: str, port: int) -> None:
    if not resolver.resolver_present():
        log.warning("no resolver to delegate *.%s to the DNS server on 127.0.0.1:%d "
                    "(systemd-resolved is not running): point your resolver at it yourself",
                    tld, port)
        return
    for action in resolver.install(tld, port):
        level = logging.INFO if action.done else logging.WARNING
        log.log(level, "%s: %s", action.target, action.detail)


def _hosts_block(root: RootConfig, paths: Paths, target: Target) -> None:
    with as_user(target):
        if not os.path.lexists(record_path(paths.home)):
            return  # the daemon never routed anything yet: leave the file alone
        names = read_record(paths.home, owners=(target.uid, 0))
    if hostsfile.write(root.hosts_file, names, root.dns_managed_tld):
        log.info("wrote the taskmux block of %s (%d names given)", root.hosts_file, len(names))
