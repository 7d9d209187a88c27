"""The hostile control-socket corpus for bench/hostile.py: malformed JSON-RPC messages of every
shape, what each one must get back, and the strict check of what did come back.

A shape makes one message from a sequence number (so that ids differ); ``expect`` says what the
JSON-RPC 2.0 spec requires in answer: ``one`` reply, ``none`` (a notification), or ``maybe``
(messages whose reading is open: a notification carrying a NaN is not JSON, so a server may
answer it with a parse error or treat it as a notification and stay silent).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE = 4 * 1024 * 1024  # taskmuxctl.core.protocol.MAX_MESSAGE_BYTES, the daemon's line cap
HUGE = MAX_MESSAGE - 100 * 1024  # a string that fits in one message, with room to spare
_OMIT = object()


@dataclass(frozen=True)
class Shape:
    name: str
    make: Callable[[int], bytes]  # the message line for sequence number i, no newline
    expect: str = "one"  # "one", "none" or "maybe"
    batch: int | None = None  # members of the reply when it is an array
    rid: Callable[[int], Any] | None = None  # the id a reply must carry (or null)
    limit: int | None = None  # at most this many copies (heavy shapes)
    solo: bool = False  # the daemon closes the connection after it (over the size cap)
    slow: bool = False  # the daemon may hold it (daemon.ping's delay)
    newline: bool = True  # send a newline after it


def req(i: int, method: Any = '"daemon.ping"', params: Any = _OMIT, rid: Any = None,
        jsonrpc: Any = '"2.0"', extra: str = "") -> bytes:
    """A request written as raw JSON text, so that members can be what JSON cannot express
    (NaN) or be left out. Arguments are raw JSON text; ``_OMIT`` leaves a member out."""
    members = []
    if jsonrpc is not _OMIT:
        members.append(f'"jsonrpc":{jsonrpc}')
    if method is not _OMIT:
        members.append(f'"method":{method}')
    if params is not _OMIT:
        members.append(f'"params":{params}')
    if rid is not _OMIT:
        members.append(f'"id":{i if rid is None else rid}')
    if extra:
        members.append(extra)
    return ("{" + ",".join(members) + "}").encode()


def _same(i: int) -> int:
    return i


def _ping(params: str, name: str, slow: bool = False) -> Shape:
    return Shape(name, lambda i: req(i, params=params), rid=_same, slow=slow,
                 limit=5 if slow else None)


def _call(method: str, params: str, name: str) -> Shape:
    return Shape(name, lambda i: req(i, method=json.dumps(method), params=params), rid=_same)


def _nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def _nested_obj(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def shapes() -> list[Shape]:
    return [
        # controls: what a well-behaved client sends
        Shape("valid ping", req, rid=_same),
        Shape("valid ping, string id", lambda i: req(i, rid=f'"s{i}"'), rid=lambda i: f"s{i}"),
        Shape("valid ping, CRLF", lambda i: req(i) + b"\r", rid=_same),
        Shape("valid ping, white space around", lambda i: b"  " + req(i) + b"\t", rid=_same),
        # not JSON at all
        Shape("truncated object", lambda i: req(i)[:-1]),
        Shape("lone {", lambda i: b"{"),
        Shape("lone [", lambda i: b"["),
        Shape("lone ]", lambda i: b"]"),
        Shape("bare word", lambda i: b"hello"),
        Shape("invalid UTF-8", lambda i: b'{"jsonrpc":"2.0","method":"\xff\xfe","id":1}'),
        Shape("UTF-8 BOM", lambda i: b"\xef\xbb\xbf" + req(i)),
        Shape("single quotes", lambda i: b"{'jsonrpc':'2.0','method':'daemon.ping','id':1}"),
        Shape("trailing comma", lambda i: req(i)[:-1] + b",}"),
        Shape("trailing garbage", lambda i: req(i) + b"xyz"),
        Shape("two objects on a line", lambda i: req(i) + req(i)),
        Shape("control char in a string",
              lambda i: b'{"jsonrpc":"2.0","method":"daemon.\x01ping","id":1}'),
        Shape("unterminated string", lambda i: b'{"jsonrpc":"2.0","method":"daemon.ping'),
        Shape("leading-zero id", lambda i: req(i, rid="01")),
        Shape("NUL byte", lambda i: req(i)[:5] + b"\x00" + req(i)[5:]),
        # non-finite numbers (not JSON; Python's json reads them) and overflowing ones
        Shape("id NaN", lambda i: req(i, rid="NaN")),
        Shape("id Infinity", lambda i: req(i, rid="Infinity")),
        Shape("id -Infinity", lambda i: req(i, rid="-Infinity")),
        Shape("id 1e400", lambda i: req(i, rid="1e400")),
        Shape("id -1e400", lambda i: req(i, rid="-1e400")),
        Shape("params {x: NaN}", lambda i: req(i, params='{"x":NaN}')),
        Shape("params [Infinity]", lambda i: req(i, params="[Infinity]"), slow=True, limit=5),
        Shape("params {x: 1e400}", lambda i: req(i, params='{"x":1e400}')),
        Shape("method NaN", lambda i: req(i, method="NaN")),
        Shape("jsonrpc NaN", lambda i: req(i, jsonrpc="NaN")),
        Shape("notification, params NaN", lambda i: req(i, params='{"delay":NaN}', rid=_OMIT),
              expect="maybe", slow=True, limit=5),
        Shape("notification, id-less Infinity params",
              lambda i: req(i, params="[Infinity]", rid=_OMIT), expect="maybe", slow=True,
              limit=5),
        # daemon.ping's delay, every kind of bad number and type
        _ping('{"delay":NaN}', "ping delay NaN", slow=True),
        _ping('{"delay":Infinity}', "ping delay Infinity", slow=True),
        _ping('{"delay":-Infinity}', "ping delay -Infinity", slow=True),
        _ping('{"delay":1e400}', "ping delay 1e400", slow=True),
        _ping('{"delay":-1e400}', "ping delay -1e400", slow=True),
        _ping('{"delay":1e308}', "ping delay 1e308", slow=True),
        _ping('{"delay":-1}', "ping delay -1", slow=True),
        _ping('{"delay":1e-400}', "ping delay 1e-400", slow=True),
        _ping('{"delay":"1"}', "ping delay string", slow=True),
        _ping('{"delay":null}', "ping delay null"),
        _ping('{"delay":true}', "ping delay true", slow=True),
        _ping('{"delay":[1]}', "ping delay array"),
        _ping('{"delay":{"a":1}}', "ping delay object"),
        _ping("[NaN]", "ping positional NaN", slow=True),
        # wrong types and members
        Shape("no jsonrpc", lambda i: req(i, jsonrpc=_OMIT), rid=_same),
        Shape('jsonrpc "1.0"', lambda i: req(i, jsonrpc='"1.0"'), rid=_same),
        Shape("jsonrpc 2.0 number", lambda i: req(i, jsonrpc="2.0"), rid=_same),
        Shape("jsonrpc null", lambda i: req(i, jsonrpc="null"), rid=_same),
        Shape("jsonrpc array", lambda i: req(i, jsonrpc='["2.0"]'), rid=_same),
        Shape("no method", lambda i: req(i, method=_OMIT), rid=_same),
        Shape("method number", lambda i: req(i, method="5"), rid=_same),
        Shape("method null", lambda i: req(i, method="null"), rid=_same),
        Shape("method array", lambda i: req(i, method="[]"), rid=_same),
        Shape("method object", lambda i: req(i, method="{}"), rid=_same),
        Shape("method true", lambda i: req(i, method="true"), rid=_same),
        Shape("method empty", lambda i: req(i, method='""'), rid=_same),
        Shape("params string", lambda i: req(i, params='"x"'), rid=_same),
        Shape("params number", lambda i: req(i, params="5"), rid=_same),
        Shape("params true", lambda i: req(i, params="true"), rid=_same),
        Shape("params null", lambda i: req(i, params="null"), rid=_same),
        Shape("extra member", lambda i: req(i, extra='"extra":1'), rid=_same),
        Shape("no jsonrpc, no id", lambda i: req(i, jsonrpc=_OMIT, rid=_OMIT)),
        Shape("only jsonrpc", lambda i: req(i, method=_OMIT, rid=_OMIT)),
        Shape("empty object", lambda i: b"{}"),
        Shape("JSON string", lambda i: b'"daemon.ping"'),
        Shape("JSON number", lambda i: b"42"),
        Shape("JSON true", lambda i: b"true"),
        Shape("JSON null", lambda i: b"null"),
        # ids of every type
        Shape("id true", lambda i: req(i, rid="true")),
        Shape("id false", lambda i: req(i, rid="false")),
        Shape("id array", lambda i: req(i, rid="[1]")),
        Shape("id object", lambda i: req(i, rid='{"a":1}')),
        Shape("id null", lambda i: req(i, rid="null"), rid=lambda i: None),
        Shape("id empty string", lambda i: req(i, rid='""'), rid=lambda i: ""),
        Shape("id unicode", lambda i: req(i, rid=json.dumps("\u00e9\u2713")),
              rid=lambda i: "\u00e9\u2713"),
        Shape("id lone surrogate", lambda i: req(i, rid='"\\ud800"'), rid=lambda i: "\ud800"),
        Shape("id negative", lambda i: req(i, rid=str(-i - 1)), rid=lambda i: -i - 1),
        Shape("id 10**40", lambda i: req(i, rid=str(10**40)), rid=lambda i: 10**40),
        Shape("id 1.5", lambda i: req(i, rid="1.5"), rid=lambda i: 1.5),
        Shape("id 100 KB string", lambda i: req(i, rid=json.dumps("i" * 100_000)),
              rid=lambda i: "i" * 100_000, limit=50),
        Shape("id huge string", lambda i: req(i, rid=json.dumps("i" * HUGE)),
              rid=lambda i: "i" * HUGE, limit=2),
        # methods nobody serves
        _call("nope", "{}", "unknown method"),
        _call("daemon.nope", "{}", "unknown method in a namespace"),
        _call("__init__", "{}", "method __init__"),
        _call("__class__", "{}", "method __class__"),
        _call("rpc.discover", "{}", "method rpc.discover"),
        _call("daemon.ping ", "{}", "method with a trailing space"),
        _call("DAEMON.PING", "{}", "method in capitals"),
        _call("x" * 1000, "{}", "method of 1,000 characters"),
        Shape("method huge", lambda i: req(i, method=json.dumps("m" * HUGE)), rid=_same,
              limit=2),
        # notifications: nothing comes back, even on error
        Shape("notification", lambda i: req(i, rid=_OMIT), expect="none"),
        Shape("notification, unknown method", lambda i: req(i, method='"nope"', rid=_OMIT),
              expect="none"),
        Shape("notification, bad params", lambda i: req(i, params='{"delay":"x"}', rid=_OMIT),
              expect="none"),
        # params of the wrong shape for real methods (none of them changes anything)
        _ping("[1,2,3]", "ping positional params"),
        _ping('{"nope":1}', "ping unknown param"),
        _call("daemon.version", '{"x":1}', "version with a param"),
        _call("daemon.status", "[1]", "status positional"),
        _call("project.status", '{"project":5}', "project.status project number"),
        _call("project.status", '{"project":["a"]}', "project.status project array"),
        _call("project.status", '{"project":"../../etc"}', "project.status path name"),
        _call("project.status", json.dumps({"project": "p" * 100_000}),
              "project.status 100 KB name"),
        _call("task.inspect", '{"task":5}', "task.inspect task number"),
        _call("task.inspect", "{}", "task.inspect no task"),
        _call("health.check", '{"project":{}}', "health.check project object"),
        _call("project.list", "[1]", "project.list positional"),
        _call("runner.exited", '{"project":5,"task":[],"run_id":"x","record":[]}',
              "runner.exited wrong types"),
        _call("runner.started", '{"project":"nope","task":"x","run_id":NaN,"record":{}}',
              "runner.started run_id NaN"),
        _call("ca.info", '{"x":1}', "ca.info with a param"),
        _call("dns.info", "[1]", "dns.info positional"),
        _call("routes.list", '{"a":1}', "routes.list with a param"),
        # huge strings within the cap
        Shape("params huge string", lambda i: req(i, params=json.dumps({"pad": "x" * HUGE})),
              rid=_same, limit=3),
        Shape("delay huge string", lambda i: req(i, params=json.dumps({"delay": "9" * HUGE})),
              rid=_same, limit=3, slow=True),
        Shape("huge escaped string", lambda i: req(i, params=json.dumps(
            {"pad": "\u00e9" * (HUGE // 7)})), rid=_same, limit=3),
        # over the cap: the daemon answers once and closes the connection
        Shape("over the cap by 16 bytes", lambda i: req(i, params=json.dumps(
            {"pad": "x" * (MAX_MESSAGE + 16)})), solo=True, limit=2),
        Shape("over the cap, 6 MiB", lambda i: b"[" + b"1," * (3 * 1024 * 1024) + b"1]",
              solo=True, limit=2),
        Shape("over the cap, no newline", lambda i: b"z" * (MAX_MESSAGE + 4096), solo=True,
              limit=2, newline=False),
        # deep nesting
        Shape("nested arrays 999", lambda i: _nested(999).encode(), batch=1),
        Shape("nested arrays 1000", lambda i: _nested(1000).encode(), batch=1),
        Shape("nested arrays 5000", lambda i: _nested(5000).encode(), batch=1, limit=20),
        Shape("nested arrays 100000", lambda i: _nested(100_000).encode(), batch=1, limit=5),
        Shape("params nested objects 1000", lambda i: req(i, params=_nested_obj(1000)),
              rid=_same),
        Shape("params nested arrays 5000", lambda i: req(i, params=_nested(5000)), rid=_same,
              limit=20),
        Shape("delay nested 2000", lambda i: req(i, params='{"delay":' + _nested(2000) + "}"),
              rid=_same, limit=20),
        Shape("id nested 2000", lambda i: req(i, rid=_nested(2000)), limit=20),
        # batches
        Shape("empty batch", lambda i: b"[]"),
        Shape("batch of numbers", lambda i: b"[1,2,3]", batch=3),
        Shape("batch of junk", lambda i: b'["a",null,{}]', batch=3),
        Shape("batch of an empty batch", lambda i: b"[[]]", batch=1),
        Shape("batch, mixed", lambda i: b"[" + req(i) + b',5,{"foo":"bar"}]', batch=3),
        Shape("batch of notifications", lambda i: b"[" + req(i, rid=_OMIT) + b","
              + req(i, method='"nope"', rid=_OMIT) + b"]", expect="none"),
        Shape("batch, notification and call", lambda i: b"[" + req(i, rid=_OMIT) + b","
              + req(i) + b"]", batch=1),
        Shape("batch of 100 pings", lambda i: b"[" + b",".join(req(j) for j in range(100))
              + b"]", batch=100),
        Shape("batch with a NaN id", lambda i: b"[" + req(i, rid="NaN") + b"," + req(i) + b"]",
              batch=2),
        Shape("batch of 1,000 integers", lambda i: b"[" + b",".join([b"1"] * 1000)
              + b"]", batch=1000, limit=20),
        Shape("batch in a batch", lambda i: b"[[" + req(i) + b"]]", batch=1),
        Shape("batch of bad delays", lambda i: b"[" + req(i, params='{"delay":NaN}') + b","
              + req(i, params='{"delay":1e400}') + b"]", batch=2, slow=True, limit=5),
    ]


def messages(count: int) -> Iterator[tuple[int, Shape]]:
    """``count`` messages: every shape at least once, heavy shapes up to their limit, the rest
    cheap shapes again and again."""
    table = shapes()
    used = dict.fromkeys((s.name for s in table), 0)
    i = 0
    while i < count:
        progressed = False
        for shape in table:
            if i >= count:
                break
            if shape.limit is not None and used[shape.name] >= shape.limit:
                continue
            used[shape.name] += 1
            progressed = True
            yield i, shape
            i += 1
        if not progressed:
            break


# -- checking what came back ----------------------------------------------------------------

def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(line: bytes) -> Any:
    """Parse ``line`` as JSON proper: NaN, Infinity and invalid UTF-8 are errors."""
    return json.loads(line.decode("utf-8"), parse_constant=_no_constants)


def response_problem(obj: Any) -> str | None:
    """What is wrong with ``obj`` as a JSON-RPC 2.0 response object, or None."""
    if not isinstance(obj, dict):
        return f"a reply member is a {type(obj).__name__}, not an object"
    if obj.get("jsonrpc") != "2.0":
        return 'no "jsonrpc": "2.0"'
    if "id" not in obj:
        return "no id"
    rid = obj["id"]
    if not (rid is None or isinstance(rid, str) or
            (isinstance(rid, int | float) and not isinstance(rid, bool))):
        return f"id of type {type(rid).__name__}"
    if ("result" in obj) == ("error" in obj):
        return "not exactly one of result and error"
    extra = obj.keys() - {"jsonrpc", "id", "result", "error"}
    if extra:
        return f"unexpected members {sorted(extra)}"
    if "error" in obj:
        err = obj["error"]
        if not isinstance(err, dict):
            return "error is not an object"
        code, message = err.get("code"), err.get("message")
        if not isinstance(code, int) or isinstance(code, bool):
            return "error code is not an integer"
        if not isinstance(message, str):
            return "error message is not a string"
        if err.keys() - {"code", "message", "data"}:
            return "unexpected members in error"
    return None


def reply_problem(line: bytes, shape: Shape, i: int) -> str | None:
    """What is wrong with ``line`` as the one reply to message ``i`` of ``shape``, or None."""
    try:
        obj = strict_json(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not strict JSON ({str(exc)[:60]}): {line[:60]!r}"
    except RecursionError:
        return "nested too deeply to read"
    if isinstance(obj, list):
        if shape.batch is None:
            return "an array in answer to a single request"
        if len(obj) != shape.batch:
            return f"{len(obj)} members in the reply to a batch of {shape.batch} calls"
        for member in obj:
            problem = response_problem(member)
            if problem:
                return problem
        return None
    problem = response_problem(obj)
    if problem:
        return problem
    if shape.batch is not None and "error" not in obj:
        return "a result in answer to a batch"
    if shape.rid is not None and obj["id"] is not None and obj["id"] != shape.rid(i):
        return f"id {str(obj['id'])[:40]} in answer to id {str(shape.rid(i))[:40]}"
    return None


def outcome_problem(lines: list[bytes], shape: Shape, i: int) -> str | None:
    """Judge every line that came back for message ``i`` on its own connection."""
    if shape.expect == "none":
        return f"{len(lines)} replies to a notification" if lines else None
    if not lines:
        return None if shape.expect == "maybe" else "no reply"
    if len(lines) > 1:
        return f"{len(lines)} replies to one message"
    return reply_problem(lines[0], shape, i)
