"""The one import of jsonrpcserver, without the 10 MB and 10 ms it would cost for nothing.

``jsonrpcserver.main`` builds a jsonschema validator for its default request check when it is
imported. The daemon never uses that check (``dispatch`` passes its own, equivalent to the
spec's request schema and cheaper), yet importing jsonschema (with referencing, rpds and
attrs) would add about 10 MB to the daemon's resident memory. So while jsonrpcserver is first
imported, ``jsonschema.validators`` is a stand-in whose validator is never called; afterwards
the stand-in is removed, so that anything else that imports jsonschema gets the real one.

Likewise ``jsonrpcserver.server`` (its ``serve``: a demonstration HTTP server the daemon never
runs) imports ``http.server``, which loads the HTTP client, the email package and more: some
10 ms of CPU at every daemon start. While jsonrpcserver is imported, ``http.server`` is a
stand-in too (``jsonrpcserver.serve`` is left unusable), removed afterwards.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _Unused:
    """In place of ``http.server``'s classes while jsonrpcserver is imported."""


class _UnusedValidator:
    def __init__(self, schema: Any) -> None:
        del schema

    @staticmethod
    def check_schema(schema: Any) -> None:
        del schema

    def validate(self, instance: Any) -> None:
        raise RuntimeError("jsonrpcserver's default validator is not used by taskmuxd")


def _import() -> None:
    if "jsonrpcserver" in sys.modules or "jsonschema" in sys.modules:
        return
    package = types.ModuleType("jsonschema")
    validators = types.ModuleType("jsonschema.validators")
    validators.validator_for = lambda schema: _UnusedValidator  # type: ignore[attr-defined]
    package.validators = validators  # type: ignore[attr-defined]
    stand_ins = {"jsonschema": package, "jsonschema.validators": validators}
    if "http.server" not in sys.modules:
        server = types.ModuleType("http.server")
        server.BaseHTTPRequestHandler = server.HTTPServer = _Unused  # type: ignore[attr-defined]
        stand_ins["http.server"] = server
    sys.modules.update(stand_ins)
    try:
        import jsonrpcserver  # noqa: F401
    finally:
        for name in stand_ins:
            del sys.modules[name]


_import()

from jsonrpcserver import Success  # noqa: E402
from jsonrpcserver.async_main import dispatch_to_serializable  # noqa: E402
from jsonrpcserver.exceptions import JsonRpcError  # noqa: E402

__all__ = ["JsonRpcError", "Success", "dispatch_to_serializable"]
