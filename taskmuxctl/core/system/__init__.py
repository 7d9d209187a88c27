"""Doors to the machine's own configuration: the trust store, the resolver, the hosts file,
and the checks on files that root reads or runs.

Used by ``taskmuxctl ca|dns install`` and by the daemon's privileged half alike.
"""
