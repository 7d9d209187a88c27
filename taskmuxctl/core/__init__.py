"""The shared core of taskmux: what the daemon and the client both need.

The wire protocol, the state-directory paths, the settings and taskmux.toml schemas, the
event log, the update engine, file helpers and the doors to the machine's own
configuration (``system``). It imports neither program (an import-linter contract in
pyproject.toml keeps it so); see ARCHITECTURE.md.
"""
