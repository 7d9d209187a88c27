"""Every RPC method's params, checked in one place before the method runs.

A method declares its parameters with type hints; numbers and collections carry their bounds
in the hint (``Annotated[float, Field(ge=0, le=60)]``), and registration refuses a method
whose number or collection parameter has none. A call's params then pass two checks, both
before any method code runs:

1. ``check_shape`` walks the raw JSON values without recursion and refuses what no method
   should ever have to look at: nesting deeper than ``MAX_DEPTH``, more than ``MAX_NODES``
   values, a collection of more than ``MAX_ITEMS`` members, a string longer than
   ``MAX_STRING``, a number that is not finite or an integer outside 64 bits. This bounds the
   work of every call, including the contents of free-form ``dict[str, Any]`` parameters.
2. A pydantic model built from the signature, in strict mode (an integer is an int, never a
   bool or a string; a float is finite) checks types and each parameter's declared range.

A failure is JSON-RPC ``Invalid params`` (-32602) naming the parameter and what it allows.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import annotated_types as at
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from taskmuxctl.core.protocol import Code
from taskmuxd.rpc.jsonrpc import JsonRpcError

MAX_DEPTH = 16
MAX_NODES = 20_000
MAX_ITEMS = 10_000
MAX_STRING = 1024 * 1024  # the longest string any parameter may declare
DEFAULT_STRING = 64 * 1024  # a string parameter that declares no max_length
INT64 = (-(2**63), 2**63 - 1)

_STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid",
                     str_max_length=DEFAULT_STRING, arbitrary_types_allowed=False)


class ParamProblem(Exception):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


@dataclass(frozen=True)
class Bounds:
    low: float | None = None
    high: float | None = None
    max_length: int | None = None


def _bounds(metadata: list[Any]) -> Bounds:
    low = high = max_length = None
    for item in metadata:
        for m in (item.metadata if isinstance(item, FieldInfo) else [item]):
            if isinstance(m, at.Ge | at.Gt):
                low = m.ge if isinstance(m, at.Ge) else m.gt
            elif isinstance(m, at.Le | at.Lt):
                high = m.le if isinstance(m, at.Le) else m.lt
            elif isinstance(m, at.MaxLen):
                max_length = m.max_length
    return Bounds(low, high, max_length)  # type: ignore[arg-type]


def _split(hint: Any) -> tuple[Any, Bounds]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *meta = typing.get_args(hint)
        inner, inner_bounds = _split(base)
        outer = _bounds(meta)
        return inner, Bounds(outer.low if outer.low is not None else inner_bounds.low,
                             outer.high if outer.high is not None else inner_bounds.high,
                             outer.max_length or inner_bounds.max_length)
    return hint, Bounds()


def _options(hint: Any) -> list[Any]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return list(typing.get_args(hint))
    return [hint]


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def describe(hint: Any, where: str) -> str:
    """What a parameter allows, in words; raises TypeError for a number or collection
    without declared bounds (``where`` names it)."""
    base, bounds = _split(hint)
    return " or ".join(_describe_one(option, where, bounds) for option in _options(base))


def _describe_one(hint: Any, where: str, outer: Bounds = Bounds(), top: bool = True) -> str:
    base, own = _split(hint)
    bounds = Bounds(own.low if own.low is not None else outer.low,
                    own.high if own.high is not None else outer.high,
                    own.max_length or outer.max_length)
    if base is type(None):
        return "null"
    if base is bool:
        return "true or false"
    if base is Any:
        return "any JSON value"
    if base in (int, float):
        if bounds.low is None or bounds.high is None:
            raise TypeError(f"{where} is a number without declared bounds; write it "
                            f"Annotated[{base.__name__}, Field(ge=..., le=...)]")
        noun = "an integer" if base is int else "a finite number"
        return f"{noun} from {_num(bounds.low)} to {_num(bounds.high)}"
    if base is str:
        length = bounds.max_length or DEFAULT_STRING
        if length > MAX_STRING:
            raise TypeError(f"{where} allows strings longer than {MAX_STRING} characters")
        return f"a string of at most {length} characters"
    origin = typing.get_origin(base)
    if origin in (list, dict):
        items = bounds.max_length or (None if top else MAX_ITEMS)
        if items is None or items > MAX_ITEMS:
            raise TypeError(f"{where} is a collection without a declared max_length (at most "
                            f"{MAX_ITEMS}); write it Annotated[..., Field(max_length=...)]")
        args = typing.get_args(base)
        member = (_describe_one(args[-1], f"{where} member", top=False) if args
                  else "any JSON value")
        noun = "an array" if origin is list else "an object"
        return f"{noun} of at most {items} members, each {member}"
    raise TypeError(f"{where}: RPC parameters are JSON values; {base!r} is not supported")


def _path(node: tuple[Any, ...]) -> str:
    """The path of a node of ``check_shape`` (made only for an error): ``name[key]...``."""
    keys: list[object] = []
    while node[2] is not None:
        keys.append(node[3])
        node = node[2]
    out = str(node[3])
    for key in reversed(keys):
        out += f"[{key if isinstance(key, int) else repr(str(key)[:40])}]"
    return out


def check_shape(params: Iterator[tuple[str, Any]]) -> None:
    """Refuse params no method should look at (see the module's docstring); iterative. Each
    node is (value, depth, parent node, key): its path is spelled out only for an error."""
    stack: list[tuple[Any, ...]] = [(value, 1, None, name) for name, value in params]
    nodes = 0
    while stack:
        node = stack.pop()
        value = node[0]
        nodes += 1
        if nodes > MAX_NODES:
            raise ParamProblem("(params)", f"too many values (more than {MAX_NODES})")
        kind = type(value)
        if kind is str:
            if len(value) > MAX_STRING:
                raise ParamProblem(_path(node), f"is longer than {MAX_STRING} characters")
        elif value is None or kind is bool:
            pass
        elif isinstance(value, dict | list):
            depth = node[1]
            if depth > MAX_DEPTH:
                raise ParamProblem(_path(node), f"nested more than {MAX_DEPTH} levels deep")
            if len(value) > MAX_ITEMS:
                raise ParamProblem(_path(node), f"has {len(value)} members; at most "
                                   f"{MAX_ITEMS} are allowed")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((member, depth + 1, node, key) for key, member in items)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ParamProblem(_path(node), "must be a finite number")
        elif isinstance(value, int) and not isinstance(value, bool):
            if not INT64[0] <= value <= INT64[1]:
                raise ParamProblem(_path(node), "is outside the 64-bit integer range")
        elif isinstance(value, str) and len(value) > MAX_STRING:
            raise ParamProblem(_path(node), f"is longer than {MAX_STRING} characters")


class ParamChecker:
    """The checks of one method: read at registration (a parameter no check can describe
    fails there), its pydantic model built at the method's first call, not before: building
    thirty of them would hold up the daemon's first answer."""

    def __init__(self, name: str, handler: Callable[..., Any]) -> None:
        target = inspect.unwrap(handler)
        hints = typing.get_type_hints(target, include_extras=True)
        self.names: list[str] = []
        self.allowed: dict[str, str] = {}
        fields: dict[str, Any] = {}
        for param in inspect.signature(target).parameters.values():
            if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                raise TypeError(f"RPC method {name}: parameter {param.name} must be a plain "
                                "named parameter")
            hint = hints.get(param.name, Any)
            self.allowed[param.name] = describe(hint, f"RPC method {name}: parameter "
                                                      f"{param.name}")
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hint, default)
            self.names.append(param.name)
        self._name = name
        self._fields: dict[str, Any] | None = fields
        self._model: type[BaseModel] | None = None

    @property
    def model(self) -> type[BaseModel]:
        if self._model is None:
            assert self._fields is not None
            self._model = create_model(f"params of {self._name}", __config__=_STRICT,
                                       **self._fields)
            self._fields = None
        return self._model

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The validated keyword arguments, or a JsonRpcError (Invalid params)."""
        if len(args) > len(self.names):
            raise JsonRpcError(Code.INVALID_PARAMS,
                               f"Invalid params: {len(args)} given by position; this method "
                               f"takes at most {len(self.names)} ({', '.join(self.names)})",
                               [{"param": "(params)", "error": "too many positional params"}])
        given = dict(zip(self.names, args, strict=False))
        for key, value in kwargs.items():
            if key in given:
                raise self._error([(key, "given both by position and by name")])
            given[key] = value
        try:
            check_shape(iter(given.items()))
        except ParamProblem as exc:
            raise self._error([(exc.param, exc.message)]) from None
        try:
            validated = self.model.model_validate(given)
        except ValidationError as exc:
            raise self._error([(".".join(str(p) for p in err["loc"]) or "(params)", err["msg"])
                               for err in exc.errors(include_input=False)]) from None
        return {name: getattr(validated, name) for name in self.names}

    def _error(self, problems: list[tuple[str, str]]) -> JsonRpcError:
        rows = []
        for param, message in problems[:20]:
            top = param.split(".", 1)[0].split("[", 1)[0]
            row = {"param": param, "error": message}
            if top in self.allowed:
                row["allowed"] = self.allowed[top]
            elif top != "(params)":
                row["allowed"] = f"parameters: {', '.join(self.names) or '(none)'}"
            rows.append(row)
        detail = "; ".join(f"{r['param']}: {r['error']}"
                           + (f" (allowed: {r['allowed']})" if "allowed" in r else "")
                           for r in rows)
        return JsonRpcError(Code.INVALID_PARAMS, f"Invalid params: {detail}", rows)
