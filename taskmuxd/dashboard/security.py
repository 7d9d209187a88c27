"""Who may use the dashboard, and how a request proves it: pure functions and the session
store, no I/O (time is an argument).

The rules, in the order a request meets them:

1. The connection's peer must be the daemon's owner: the proxy learns the uid of a loopback
   client from the kernel (``peeruid``); anyone else, and any client whose uid cannot be
   known, gets 403 for every request, reads included.
2. The Host header must be exactly the dashboard's name (with the port when it is not 443):
   a page on another name that DNS-rebinds to loopback is refused (421).
3. Reads need nothing more. A change (start, stop, restart) also needs the session: the
   HttpOnly, Secure, SameSite=Strict cookie that ``taskmux dashboard`` set by handing the
   browser a one-time token, the session's CSRF token in a header (a page elsewhere cannot
   read it: there is no CORS), and an Origin header equal to the dashboard's own origin.

Every answer carries a Content-Security-Policy that allows only the dashboard's own scripts,
styles and connections, and forbids framing.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

COOKIE = "taskmux_session"
CSRF_HEADER = "x-taskmux-csrf"
TOKEN_TTL = 120.0  # seconds a one-time token from `taskmux dashboard` stays good
SESSION_TTL = 7 * 86400.0  # seconds a session lasts
MAX_SESSIONS = 64
MAX_PENDING = 16
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)


def site_name(tld: str) -> str:
    return f"taskmux.{tld}"


def authority(tld: str, port: int) -> str:
    """What the Host header must say: the name, and the port unless it is 443."""
    return site_name(tld) if port == 443 else f"{site_name(tld)}:{port}"


def origin(tld: str, port: int) -> str:
    return f"https://{authority(tld, port)}"


def host_ok(host: str | None, tld: str, port: int) -> bool:
    """The Host header names the dashboard exactly (case aside), nothing else."""
    return host is not None and host.lower() == authority(tld, port)


def peer_ok(client: str, owner_uid: int) -> bool:
    """The proxy's key for the connection (``"uid N"`` on loopback) is the owner's."""
    return client == f"uid {owner_uid}"


def cookie_value(header: str | None, name: str = COOKIE) -> str | None:
    """The value of cookie ``name`` in a Cookie header (the first one)."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def set_cookie(token: str, max_age: float = SESSION_TTL) -> str:
    return (f"{COOKIE}={token}; Path=/; Max-Age={int(max_age)}; HttpOnly; Secure; "
            "SameSite=Strict")


@dataclass
class Session:
    uid: int
    csrf: str
    expires: float


class Sessions:
    """One-time tokens waiting to be redeemed and the sessions they became."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}  # token -> expiry
        self.sessions: dict[str, Session] = {}

    def issue(self, now: float) -> str:
        """A one-time token for ``taskmux dashboard`` (the oldest dropped past the bound)."""
        self._expire(now)
        while len(self.pending) >= MAX_PENDING:
            self.pending.pop(next(iter(self.pending)))
        token = secrets.token_urlsafe(32)
        self.pending[token] = now + TOKEN_TTL
        return token

    def redeem(self, token: str, uid: int, now: float) -> str | None:
        """Turn a one-time token into a session for ``uid``: the session's id, or None
        (unknown, used or expired)."""
        self._expire(now)
        expires = self.pending.pop(token, None)
        if expires is None:
            return None
        while len(self.sessions) >= MAX_SESSIONS:
            self.sessions.pop(next(iter(self.sessions)))
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = Session(uid, secrets.token_urlsafe(24), now + SESSION_TTL)
        return sid

    def find(self, sid: str | None, uid: int, now: float) -> Session | None:
        """The live session ``sid`` if it belongs to ``uid``."""
        if not sid:
            return None
        self._expire(now)
        session = self.sessions.get(sid)
        if session is None or session.uid != uid:
            return None
        return session

    def _expire(self, now: float) -> None:
        for token in [t for t, exp in self.pending.items() if exp <= now]:
            del self.pending[token]
        for sid in [s for s, sess in self.sessions.items() if sess.expires <= now]:
            del self.sessions[sid]


def change_allowed(session: Session | None, origin_header: str | None, csrf_header: str | None,
                   tld: str, port: int) -> str | None:
    """Why a state-changing request is refused (None: allowed)."""
    if session is None:
        return "no session: run `taskmux dashboard` to open the dashboard with one"
    if origin_header != origin(tld, port):
        return "the request's Origin is not the dashboard's"
    if not csrf_header or not hmac.compare_digest(csrf_header, session.csrf):
        return "the request lacks the dashboard's CSRF token"
    return None
