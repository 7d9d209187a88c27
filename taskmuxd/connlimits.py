"""How many connections a listener holds at once: in total and per client address.

A listener asks ``admit`` for each connection it accepts and closes the connection at once
when the answer is no; ``release`` gives the place back when the connection ends. The
totals are kept well below the process's descriptor limit (see ``fdlimit``), so no number of
connections to the proxy or the DNS server can take the descriptors the control socket needs.
"""

from __future__ import annotations


class ConnectionLimits:
    __slots__ = ("by_client", "open", "per_client", "refused", "total")

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open = 0
        self.by_client: dict[str, int] = {}
        self.refused = 0

    def admit(self, client: str) -> bool:
        """Whether one more connection from ``client`` fits; if so it is counted."""
        held = self.by_client.get(client, 0)
        if self.open >= self.total or held >= self.per_client:
            self.refused += 1
            return False
        self.open += 1
        self.by_client[client] = held + 1
        return True

    def release(self, client: str) -> None:
        held = self.by_client.get(client, 0)
        if held <= 0:
            return
        self.open -= 1
        if held == 1:
            del self.by_client[client]
        else:
            self.by_client[client] = held - 1

    def resize(self, total: int, per_client: int) -> None:
        """New limits; connections already open stay (new ones wait until they fit)."""
        self.total, self.per_client = total, per_client

    def status(self) -> dict[str, int]:
        return {"open": self.open, "max": self.total, "max_per_client": self.per_client,
                "refused": self.refused}
