"""The daemon's JSON-RPC handlers, one module per group of namespaces.

They sit above the subsystems they call (``projects``, ``proxy``, ``dns``...) and below
the ``Daemon`` that registers them.
"""
