"""Connection caps and the descriptor budget (pure logic; the daemon-level proof is in
test_proxy_hostile.py and test_dns_hostile.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from taskmuxd import fdlimit
from taskmuxd.connlimits import ConnectionLimits


def test_caps_per_client_and_in_total() -> None:
    limits = ConnectionLimits(total=3, per_client=2)
    assert limits.admit("a") and limits.admit("a")
    assert not limits.admit("a")  # a's two places are taken
    assert limits.admit("b")
    assert not limits.admit("c")  # all three are
    assert limits.status() == {"open": 3, "max": 3, "max_per_client": 2, "refused": 2}
    limits.release("a")
    assert limits.admit("c")
    for client in ("a", "b", "c"):
        limits.release(client)
    assert limits.open == 0 and limits.by_client == {}
    limits.release("nobody")  # an unknown release changes nothing
    assert limits.open == 0


def test_resizing_keeps_open_connections_and_admits_by_the_new_caps() -> None:
    limits = ConnectionLimits(total=4, per_client=4)
    for _ in range(4):
        assert limits.admit("a")
    limits.resize(total=2, per_client=1)
    assert limits.open == 4 and not limits.admit("b")
    for _ in range(3):
        limits.release("a")
    assert limits.admit("b") and not limits.admit("b")


@pytest.mark.parametrize("limit", [64, 256, 512, 1024, 4096, 65536])
def test_the_shares_leave_the_reserve_free(limit: int) -> None:
    proxy, dns = fdlimit.shares(limit)
    assert proxy >= 1 and dns >= 1
    # Two descriptors per proxied request, one per DNS connection, and the reserve.
    assert 2 * proxy + dns + min(fdlimit.RESERVED, limit // 2) <= limit


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    code = ("import resource; from taskmuxd import fdlimit; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (100, 600)); "
            "print(fdlimit.raise_soft_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    assert out == ["600", "(600, 600)\n"]
    # Never above the ceiling (the tasks the daemon starts inherit the soft limit).
    code = code.replace("raise_soft_limit()", "raise_soft_limit(ceiling=300)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    assert out == ["300", "(300, 600)\n"]


def test_a_loopback_client_is_known_by_its_uid() -> None:
    import os
    import socket

    from taskmuxd.peeruid import PeerUids

    peers = PeerUids()
    try:
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family) as server:
                server.bind((address, 0))
                server.listen()
                with socket.socket(family) as client:
                    client.connect(server.getsockname()[:2])
                    conn, _ = server.accept()
                    with conn:
                        expected = f"uid {os.getuid()}" if sys.platform == "linux" else address
                        assert peers.key(conn) == expected
            assert peers.key(conn) == "unknown"  # closed: no peer to ask about
    finally:
        peers.close()
