"""``events.subscribe``: the event history pushed to clients as JSON-RPC notifications.

A subscription lives on the connection that made it. Its reply comes first; then, as
``events.event`` notifications, the events after the client's ``cursor`` (the last id it
saw) up to now, then every new one, each once, in id order, filtered by project, task and
kind. Replay comes from a ring of recent events, or from ``events.jsonl`` (in a thread) for
a cursor older than the ring; ``missed`` in the reply counts events the history no longer
holds (trimmed). Without a cursor only new events are sent.

Each subscription has a bounded queue. A client that does not read fast enough fills it;
it is then dropped with an ``events.dropped`` notification carrying the last id it was sent,
and subscribing again with that cursor gets it the rest. The daemon never waits on a
subscriber: events are queued synchronously and a per-subscription task writes them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from taskmuxctl.core import eventread
from taskmuxctl.core.errors import ClientError
from taskmuxctl.core.eventlog import EventLog, read_events
from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.rpctypes import SubscribeResult, UnsubscribeResult
from taskmuxd.handlers.network import hooks_enabled
from taskmuxd.rpc.ctlsocket import CURRENT, Connection

if TYPE_CHECKING:
    from taskmuxd.handlertype import Handler

log = logging.getLogger("taskmuxd.eventstream")

RING = 4096  # recent events kept for replay without reading the file
QUEUE = 10_000  # default queue bound per subscription
BATCH = 256  # notifications written at once
MAX_PER_CONNECTION = 16
MAX_SUBSCRIPTIONS = 256

Kinds = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=128)]


def _id(rec: dict[str, Any]) -> int | None:
    value = rec.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Subscription:
    def __init__(self, hub: EventHub, sid: int, conn: Connection, project: str | None,
                 task: str | None, kinds: set[str] | None, limit: int, high: int) -> None:
        self.hub = hub
        self.sid = sid
        self.conn = conn
        self.project, self.task, self.kinds = project, task, kinds
        self.limit = limit
        self.high = high  # the highest id queued (or replayed): nothing at or below again
        self.sent = high  # the highest id written to the connection
        self.replay: deque[dict[str, Any]] = deque()
        self.queue: deque[dict[str, Any]] = deque()
        self.wake = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None

    def matches(self, rec: dict[str, Any]) -> bool:
        return eventread.matches(rec, self.project, self.task, None, self.kinds)

    def offer(self, rec: dict[str, Any]) -> None:
        ident = _id(rec)
        if ident is None or ident <= self.high:
            return
        self.high = ident
        if not self.matches(rec):
            return
        if len(self.queue) >= self.limit:
            self.hub.drop(self, f"the subscriber fell {self.limit} events behind")
            return
        self.queue.append(rec)
        self.wake.set()

    def start(self) -> None:
        self.pump = asyncio.create_task(self._pump(), name=f"events-subscription-{self.sid}")

    async def _pump(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.replay or self.queue:
                source = self.replay or self.queue
                batch = [source.popleft() for _ in range(min(BATCH, len(source)))]
                await self.conn.send_raw(b"".join(self._line(rec) for rec in batch))
                self.sent = max(self.sent, _id(batch[-1]) or 0)

    def _line(self, rec: dict[str, Any]) -> bytes:
        msg = {"jsonrpc": "2.0", "method": Method.EVENT_NOTICE,
               "params": {"subscription": self.sid, "event": rec}}
        return json.dumps(msg, separators=(",", ":"), default=str).encode() + b"\n"


class EventHub:
    """The daemon's subscriptions and the ring of recent events they replay from."""

    name = "events"

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.ring: deque[dict[str, Any]] = deque(maxlen=RING)
        self.subs: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        self.dropped = 0
        self._unlisten = events.subscribe(self._on_event)

    def _on_event(self, rec: dict[str, Any]) -> None:
        if _id(rec) is None:
            return
        self.ring.append(rec)
        for sub in list(self.subs.values()):
            sub.offer(rec)

    def status(self) -> dict[str, Any]:
        return {"subscriptions": len(self.subs), "dropped_subscribers": self.dropped,
                "last_id": self.events.last_id}

    def drop(self, sub: Subscription, reason: str) -> None:
        """End a subscription that cannot keep up, telling its client where it got to."""
        self.remove(sub)
        self.dropped += 1
        log.warning("dropped event subscription %d: %s", sub.sid, reason)
        notice = {"jsonrpc": "2.0", "method": Method.EVENTS_DROPPED_NOTICE,
                  "params": {"subscription": sub.sid, "reason": reason, "cursor": sub.sent}}
        writer = sub.conn.writer
        if not writer.is_closing():  # a whole line into the buffer; nothing waits on it
            writer.write(json.dumps(notice, separators=(",", ":")).encode() + b"\n")

    def remove(self, sub: Subscription) -> None:
        self.subs.pop(sub.sid, None)
        if sub.pump is not None:
            sub.pump.cancel()

    async def subscribe(self, conn: Connection, project: str | None, task: str | None,
                        kinds: set[str] | None, cursor: int | None, limit: int,
                        after_reply: list[Any]) -> SubscribeResult:
        if len(self.subs) >= MAX_SUBSCRIPTIONS or sum(
                1 for s in self.subs.values() if s.conn is conn) >= MAX_PER_CONNECTION:
            raise ClientError(f"too many event subscriptions (at most {MAX_PER_CONNECTION} a "
                              f"connection, {MAX_SUBSCRIPTIONS} in all)", code=Code.USAGE)
        upto = self.events.last_id if self.ring else await asyncio.to_thread(
            self.events.current_id)
        if self.ring:
            upto = max(upto, _id(self.ring[-1]) or 0)
        sub = Subscription(self, next(self._ids), conn, project, task, kinds, limit, upto)
        self.subs[sub.sid] = sub
        conn.on_close.append(lambda: self.remove(sub))
        replayed, missed = 0, 0
        if cursor is not None and cursor < upto:
            try:
                records, missed = await self._since(cursor, upto)
            except BaseException:
                self.remove(sub)
                raise
            sub.replay.extend(r for r in records if sub.matches(r))
            replayed = len(sub.replay)
        sub.sent = cursor if cursor is not None else upto
        after_reply.append(lambda: self._begin(sub))
        return {"subscription": sub.sid, "cursor": upto, "replayed": replayed,
                "missed": missed}

    def _begin(self, sub: Subscription) -> None:
        if sub.sid in self.subs:
            sub.start()
            sub.wake.set()

    async def _since(self, cursor: int, upto: int) -> tuple[list[dict[str, Any]], int]:
        """The records after ``cursor`` up to ``upto``, and how many of those ids the
        history no longer holds."""
        first = _id(self.ring[0]) if self.ring else None
        if first is not None and first <= cursor + 1:
            records = [r for r in self.ring if cursor < (_id(r) or 0) <= upto]
        else:
            records = await asyncio.to_thread(_from_file, self.events.path, cursor, upto)
        missed = 0
        if records:
            missed = max((_id(records[0]) or 0) - cursor - 1, 0)
        elif upto > cursor:
            missed = upto - cursor
        return records, missed

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.close()

    def settings_changed(self, old: Any, new: Any) -> None:
        del old, new

    def close(self) -> None:
        self._unlisten()
        for sub in list(self.subs.values()):
            self.remove(sub)


def _from_file(path: str, cursor: int, upto: int) -> list[dict[str, Any]]:
    return [r for r in read_events(path) if cursor < (_id(r) or 0) <= upto]


class EventMethods:
    """The ``events.*`` namespace (and the ``debug.emit`` test hook when hooks are on)."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub

    def handlers(self) -> Mapping[str, Handler]:
        out: dict[str, Handler] = {Method.EVENTS_SUBSCRIBE: self.subscribe,
                                   Method.EVENTS_UNSUBSCRIBE: self.unsubscribe}
        if hooks_enabled():
            out[Method.DEBUG_EMIT] = self.emit
        return out

    async def subscribe(self, project: Annotated[str, Field(max_length=256)] | None = None,
                        task: Annotated[str, Field(max_length=256)] | None = None,
                        kinds: Kinds | None = None,
                        cursor: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None,
                        queue: Annotated[int, Field(ge=16, le=100_000)] = QUEUE
                        ) -> SubscribeResult:
        """Push the matching events after ``cursor`` (or from now) as ``events.event``
        notifications on this connection; see the module's docstring."""
        call = CURRENT.get()
        if call is None:  # pragma: no cover - every call runs through the server
            raise ClientError("events.subscribe needs a connection")
        return await self.hub.subscribe(call.conn, project, task,
                                        set(kinds) if kinds else None, cursor, queue,
                                        call.after_reply)

    async def unsubscribe(self, subscription: Annotated[int, Field(ge=1, le=2**63 - 1)]
                          ) -> UnsubscribeResult:
        call = CURRENT.get()
        sub = self.hub.subs.get(subscription)
        if sub is None or call is None or sub.conn is not call.conn:
            return {"subscription": subscription, "removed": False}
        self.hub.remove(sub)
        return {"subscription": subscription, "removed": True}

    async def emit(self, count: Annotated[int, Field(ge=1, le=100_000)],
                   project: Annotated[str, Field(max_length=63)] | None = None,
                   padding: Annotated[int, Field(ge=0, le=10_000)] = 0) -> dict[str, Any]:
        """Test hook: ``count`` events at once, without yielding to the loop (a burst)."""
        events = self.hub.events
        for i in range(count):
            events.emit("test_event", project, None, n=i, pad="x" * padding)
        events.flush()
        return {"last_id": events.last_id}
