"""JSON encode/decode on the client's hot path, without importing ``json`` (and ``re``).

``import json`` pulls in ``re`` and ``enum``, which together cost more than the rest of a
status call. CPython's ``_json`` accelerator holds the same scanner and encoder that ``json``
drives, so this module drives them directly; where ``_json`` is missing it falls back to
``json``. Output is compact and ASCII-safe; input must be one JSON document.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any


__all__ = ["JSONError", "dumps", "loads"]


class JSONError(ValueError):
    """The text is not one valid JSON document."""


def _reject(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _constant(name: str) -> Any:
    raise JSONError(f"invalid JSON constant {name}")


_c_make_encoder: Any
try:
    from _json import encode_basestring_ascii as _c_escape
    from _json import make_encoder as _c_make_encoder
    from _json import make_scanner as _c_make_scanner
except ImportError:  # pragma: no cover - every CPython has _json
    _c_make_encoder = None

if _c_make_encoder is not None:

    class _ScanContext:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = staticmethod(_constant)

    _scan = _c_make_scanner(_ScanContext())  # type: ignore[arg-type]
    _encode = _c_make_encoder(None, _reject, _c_escape, None, ":", ",", False, False, False)
    _WS = " \t\n\r"

    def dumps(obj: Any) -> str:
        return "".join(_encode(obj, 0))

    def loads(text: str | bytes) -> Any:
        if isinstance(text, bytes | bytearray):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise JSONError(f"not UTF-8: {exc}") from None
        start = len(text) - len(text.lstrip(_WS))
        try:
            obj, end = _scan(text, start)
        except StopIteration as exc:
            raise JSONError(f"expected a JSON value at offset {exc.value}") from None
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise JSONError(str(exc)) from None
        if text[end:].strip(_WS):
            raise JSONError(f"extra data after the JSON value at offset {end}")
        return obj

else:  # pragma: no cover
    import json as _json

    def dumps(obj: Any) -> str:
        return _json.dumps(obj, separators=(",", ":"), allow_nan=False)

    def loads(text: str | bytes) -> Any:
        try:
            return _json.loads(text)
        except ValueError as exc:
            raise JSONError(str(exc)) from None
