"""The answers the proxy writes itself: error pages that say what is wrong and what to do,
and the plain-HTTP redirect. HTML for browsers, plain text for everything else. ``html``
(with its table of entities, ~1.5 ms) is loaded with the first HTML page."""

from __future__ import annotations

REASONS = {301: "Moved Permanently", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 421: "Misdirected Request",
           431: "Request Header Fields Too Large",
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}

# Task states in which the task is on its way up: the page refreshes itself.
COMING_UP = frozenset({"starting", "backoff", "restarting", "waiting", "pending"})


def response(status: int, kind: str, title: str, detail: str, *, html_ok: bool,
             close: bool, refresh: int | None = None, head_only: bool = False,
             extra: list[bytes] | None = None) -> bytes:
    """A complete response. ``kind`` goes in ``X-Taskmux-Error`` for scripts."""
    if html_ok:
        import html

        meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
        body = (
            "<!doctype html><html><head><meta charset=\"utf-8\">" + meta
            + f"<title>{html.escape(title)}</title>"
            "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46em;margin:4em auto;"
            "padding:0 1em;color:#222}code{background:#f3f3f3;padding:0 .2em}"
            "small{color:#777}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{_html_detail(detail)}</p>"
            f"<p><small>taskmux proxy &middot; {status} {REASONS.get(status, '')}</small></p>"
            "</body></html>\n"
        ).encode()
        ctype = b"text/html; charset=utf-8"
    else:
        body = f"{title}\n{detail}\n".encode()
        ctype = b"text/plain; charset=utf-8"
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}".encode(),
        b"Content-Type: " + ctype,
        b"Content-Length: " + str(len(body)).encode(),
        b"Cache-Control: no-store",
        b"X-Taskmux-Error: " + kind.encode(),
    ]
    if refresh:
        lines.append(f"Retry-After: {refresh}".encode())
    lines.extend(extra or [])
    if close:
        lines.append(b"Connection: close")
    out = b"\r\n".join(lines) + b"\r\n\r\n"
    return out if head_only else out + body


def _html_detail(detail: str) -> str:
    """Escape, then show `backticked` spans as code."""
    import html

    parts = html.escape(detail).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def not_ready(name: str, project: str, task: str, state: str, *, html_ok: bool, close: bool,
              head_only: bool = False) -> bytes:
    refresh = 2 if state in COMING_UP else None
    detail = (f"Task `{task}` of project `{project}` is {state}, so nothing answers at "
              f"{name} yet. ")
    if refresh:
        detail += "This page reloads until it is up."
    else:
        detail += (f"Start it with `taskmux start {task}`; see why it stopped with "
                   f"`taskmux logs {task}`.")
    return response(502, "task-not-ready", f"{name}: task {task} is {state}", detail,
                    refresh=refresh, html_ok=html_ok, close=close, head_only=head_only)


def unreachable(name: str, project: str, task: str, port: int, error: str, *,
                html_ok: bool, close: bool, head_only: bool = False) -> bytes:
    detail = (f"Task `{task}` of project `{project}` is running, but nothing accepts "
              f"connections on its port {port} (tried 127.0.0.1 and ::1: {error}). Make its "
              "command listen on `$PORT`; see `taskmux logs " + task + "`.")
    return response(502, "backend-unreachable", f"{name}: task {task} does not answer", detail,
                    html_ok=html_ok, close=close, head_only=head_only)


def unknown_project(name: str, project: str | None, known: list[str], *, html_ok: bool,
                    close: bool, head_only: bool = False) -> bytes:
    listed = ", ".join(known) if known else "none"
    who = f"no project named `{project}`" if project else "no project"
    detail = (f"taskmux has {who} for {name}. Projects with URLs: {listed}. Register one "
              "with `taskmux start` in its folder.")
    return response(404, "unknown-project", f"{name}: unknown project", detail,
                    html_ok=html_ok, close=close, head_only=head_only)


def unknown_host(name: str, project: str, hosts: list[str], *, html_ok: bool, close: bool,
                 head_only: bool = False) -> bytes:
    listed = ", ".join(hosts) if hosts else "none yet"
    detail = (f"Project `{project}` has no task with a host for {name}. Its hosts: {listed}. "
              "Give a task `host = \"...\"` in taskmux.toml (`@` for the bare name, `*` for "
              "any other name).")
    return response(404, "unknown-host", f"{name}: no such host in {project}", detail,
                    html_ok=html_ok, close=close, head_only=head_only)


def bad_request(status: int, reason: str, *, html_ok: bool, close: bool) -> bytes:
    return response(status, "bad-request", REASONS.get(status, "Bad Request"), reason,
                    html_ok=html_ok, close=close)


def redirect(location: str, *, close: bool) -> bytes:
    lines = [b"HTTP/1.1 301 Moved Permanently", b"Location: " + location.encode("latin-1"),
             b"Content-Length: 0", b"Cache-Control: no-store"]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"
