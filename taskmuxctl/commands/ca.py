"""``ca install|uninstall|mint|path``: the local certificate authority behind the https URLs.

The daemon owns the CA (it creates it on first need, in the state directory); these commands
ask it where the CA is, and ``install``/``uninstall`` add it to or remove it from the trust
stores. Run with sudo, they act for the user who ran sudo: the state directory and browser
databases are that user's, and only the system store is changed as root.
"""

from __future__ import annotations

import os

from taskmuxctl.context import Context
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.result import CommandError, Result
from taskmuxctl.core.rpcclient import DaemonUnavailable

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    import pwd
    from typing import Any

    from taskmuxctl.core.rpctypes import CaMintParams, MintResult


def sudo_user() -> pwd.struct_passwd | None:
    """The user who ran sudo, when this runs as root through sudo."""
    uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() != 0 or not uid.isdigit() or uid == "0":
        return None
    import pwd

    try:
        return pwd.getpwuid(int(uid))
    except KeyError:
        return None


def acting_user() -> pwd.struct_passwd:
    import pwd

    return sudo_user() or pwd.getpwuid(os.getuid())


def user_context(ctx: Context) -> Context:
    """Under sudo, a context on the invoking user's state directory, which never starts a
    daemon as root; otherwise ``ctx`` itself."""
    user = sudo_user()
    if user is None:
        return ctx
    home = os.environ.get("TASKMUX_HOME") or os.path.join(user.pw_dir, ".taskmux")
    return Context(Paths(home), ctx.as_json, no_daemon_start=True, prog=ctx.prog)


def ca_info(ctx: Context) -> dict[str, Any]:
    uctx = user_context(ctx)
    try:
        info: dict[str, Any] = uctx.call(Method.CA_INFO)
        return info
    except DaemonUnavailable:
        if uctx is ctx:
            raise
        cert = os.path.join(uctx.paths.home, "ca", "ca.pem")
        if os.path.exists(cert):
            return {"cert": cert, "subject": _subject_of(cert)}
        raise CommandError(
            f"there is no local CA in {uctx.paths.home} yet and the daemon is not running: run "
            "`taskmux ca path` as yourself first (that creates it), then this with sudo",
            Code.DAEMON_NOT_RUNNING) from None
    finally:
        if uctx is not ctx:
            uctx.close()


def _subject_of(cert_path: str) -> str:
    from cryptography import x509

    with open(cert_path, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    return str(cert.subject.rfc4514_string())


def ca_name(info: dict[str, Any]) -> str:
    """The CA's common name: the label it gets in trust stores."""
    for part in str(info.get("subject", "")).split(","):
        if part.startswith("CN="):
            return part[3:].replace("\\", "")
    return "taskmux local CA"


def _render(actions: list[Any], head: str) -> str:
    lines = [head]
    for a in actions:
        mark = "ok " if a.done else ("sudo" if a.needs_root else "!! ")
        lines.append(f"  [{mark}] {a.target}: {a.detail}")
    return "\n".join(lines)


def install(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.system import truststore

    info = ca_info(ctx)
    name = ca_name(info)
    user = acting_user()
    actions = [truststore.install_system(info["cert"], name, truststore.detect_system_store())]
    actions += truststore.install_nss(info["cert"], name, user)
    return _outcome(actions, info, f"local CA {name} ({info['cert']})")


def uninstall(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.system import truststore

    info = ca_info(ctx)
    name = ca_name(info)
    actions = [truststore.uninstall_system(name, truststore.detect_system_store(), info["cert"])]
    actions += truststore.uninstall_nss(name, acting_user())
    return _outcome(actions, info, f"local CA {name}")


def _outcome(actions: list[Any], info: dict[str, Any], head: str) -> Result:
    complete = all(a.done for a in actions)
    text = _render(actions, head)
    if not complete and any(a.needs_root for a in actions):
        text += "\nSome steps need root: run the same command with sudo."
    return Result({"ca": info["cert"], "name": ca_name(info), "complete": complete,
                   "actions": [a.as_dict() for a in actions]}, text)


def path(ctx: Context, args: Any) -> Result:
    info = ca_info(ctx)
    return Result({"path": info["cert"], "fingerprint_sha256": info.get("fingerprint_sha256")},
                  info["cert"])


def mint(ctx: Context, args: Any) -> Result:
    project = args.project or _project_here()
    params: CaMintParams | None = {"project": project} if project else None
    uctx = user_context(ctx)
    try:
        result: MintResult = uctx.call(Method.CA_MINT, params)
    finally:
        if uctx is not ctx:
            uctx.close()
    minted = result["minted"]
    if not minted:
        text = "no project has URLs yet: nothing to mint (name one: `taskmux ca mint PROJECT`)"
    else:
        text = "\n".join(f"minted {', '.join(m['names'])} (valid until "
                         f"{m['not_after'][:10]}): {m['cert']}" for m in minted)
    return Result(dict(result), text)


def _project_here() -> str | None:
    """The ``name`` of the taskmux.toml here or above, if there is one."""
    from taskmuxctl.core.whichproject import find_config

    config = find_config()
    if config is None:
        return None
    import tomllib

    try:
        with open(config, "rb") as fh:
            name = tomllib.load(fh).get("name")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CommandError(f"cannot read {config}: {exc}", Code.CONFIG_INVALID) from None
    return name if isinstance(name, str) and name else None
