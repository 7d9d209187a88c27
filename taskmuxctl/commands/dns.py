"""``dns install|uninstall|query|flush``: how the system resolves ``*.localhost`` names.

``install`` converges to what ``host_resolver`` asks for: the hosts file's managed block
(``etc_hosts``, with the names the daemon routes) or the resolver delegation to taskmux's
DNS server (``dns_server``). Both need root; without it the command says what to run.
``uninstall`` removes both. ``query`` asks taskmux's DNS server directly.
"""

from __future__ import annotations

from taskmuxctl.commands.ca import user_context
from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.result import CommandError, Result
from taskmuxctl.core.rpcclient import DaemonUnavailable

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any

QUERY_TIMEOUT = 3.0


def _settings(ctx: Context) -> Any:
    from taskmuxctl.core import settings as settings_mod
    from taskmuxctl.core.errors import SettingsError

    try:
        return settings_mod.load(ctx.paths.config)
    except SettingsError as exc:
        raise CommandError(exc.message, exc.code, exc.data) from None


def _daemon_dns(ctx: Context) -> dict[str, Any] | None:
    """The running daemon's view (names routed, DNS port bound), or None if it is down."""
    try:
        info: dict[str, Any] = ctx.call(Method.DNS_INFO, start=False)
        return info
    except DaemonUnavailable:
        return None


def _render(actions: list[Any], head: str) -> str:
    lines = [head]
    for a in actions:
        mark = "ok " if a.done else ("sudo" if a.needs_root else "!! ")
        lines.append(f"  [{mark}] {a.target}: {a.detail}")
    if any(a.needs_root and not a.done for a in actions):
        lines.append("Some steps need root: run the same command with sudo.")
    return "\n".join(lines)


def _result(actions: list[Any], head: str, extra: dict[str, Any]) -> Result:
    return Result({**extra, "complete": all(a.done for a in actions),
                   "actions": [a.as_dict() for a in actions]}, _render(actions, head))


def _hosts_action(path: str, names: list[str], verb: str, tld: str) -> Any:
    from taskmuxctl.core.system import hostsfile
    from taskmuxctl.core.system.resolver import Action

    try:
        changed = hostsfile.write(path, names, tld)
    except PermissionError:
        return Action(path, False, f"needs root: run `sudo taskmux dns {verb}`",
                      needs_root=True)
    except OSError as exc:
        return Action(path, False, f"cannot write it: {exc.strerror or exc}")
    what = f"{len(names)} names in the taskmux block" if names else "no taskmux block"
    return Action(path, True, ("now " if changed else "already ") + what, changed=changed)


def install(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.system import resolver
    from taskmuxctl.core.system.hostsrecord import read_record

    uctx = user_context(ctx)
    try:
        settings = _settings(uctx)
        info = _daemon_dns(uctx)
    finally:
        if uctx is not ctx:
            uctx.close()
    mode = settings.host_resolver
    tld = settings.dns_managed_tld
    if mode == "etc_hosts":
        names = info["hostnames"] if info else read_record(uctx.paths.home)
        actions = [_hosts_action(settings.hosts_file, names, "install", tld)]
    elif mode == "dns_server":
        port = (info or {}).get("port") or settings.dns_server_port
        actions = resolver.install(tld, port)
    else:
        actions = [resolver.Action("host_resolver", True, "noop: nothing to install (set "
                                     "host_resolver to etc_hosts or dns_server first)")]
    return _result(actions, f"name resolution for *.{tld} ({mode})", {"resolver": mode})


def uninstall(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.system import resolver

    uctx = user_context(ctx)
    settings = _settings(uctx)
    actions = [_hosts_action(settings.hosts_file, [], "uninstall",
                               settings.dns_managed_tld)]
    actions += resolver.uninstall(settings.dns_managed_tld)
    return _result(actions, f"name resolution for *.{settings.dns_managed_tld}",
                   {"resolver": settings.host_resolver})


def flush(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.system import resolver

    return _result(resolver.flush(), "DNS caches", {})


def query(ctx: Context, args: Any) -> Result:
    info = _daemon_dns(ctx)
    if info is None:
        raise CommandError("the daemon is not running, so neither is its DNS server; start "
                           "it with `taskmux daemon start`", Code.DAEMON_NOT_RUNNING)
    if info["resolver"] != "dns_server" or not info.get("port"):
        why = info.get("status", {}).get("error") or f"host_resolver is {info['resolver']}"
        raise CommandError(f"taskmux's DNS server is not serving ({why}); turn it on with "
                           "`taskmux config set host_resolver dns_server`", Code.USAGE)
    from dnslib import QTYPE, DNSRecord

    qtype = args.type.upper()
    if qtype not in QTYPE.reverse:
        raise CommandError(f"unknown record type {args.type!r} (try A or AAAA)", Code.USAGE)
    request = DNSRecord.question(args.name, qtype)
    try:
        raw = request.send("127.0.0.1", int(info["port"]), timeout=QUERY_TIMEOUT)
    except OSError as exc:
        raise CommandError(f"no answer from 127.0.0.1:{info['port']}: {exc}",
                           Code.DAEMON_UNREACHABLE) from None
    reply = DNSRecord.parse(raw)
    rcode = reply.header.rcode
    from dnslib import RCODE

    answers = [{"name": str(rr.rname), "type": QTYPE[rr.rtype], "ttl": rr.ttl,
                "data": str(rr.rdata)} for rr in reply.rr]
    status = RCODE[rcode]
    lines = [f"{args.name} {qtype}: {status} (from 127.0.0.1:{info['port']})"]
    lines += [f"  {a['name']} {a['ttl']} {a['type']} {a['data']}" for a in answers]
    return Result({"name": args.name, "type": qtype, "status": status, "answers": answers,
                   "server": f"127.0.0.1:{info['port']}"}, "\n".join(lines))
