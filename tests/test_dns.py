"""Name resolution: taskmux's DNS server asked by a real resolver client (dnspython) over
UDP and TCP, and the hosts file's managed block rewritten without touching other lines."""

from __future__ import annotations

import os
import socket
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from taskmuxctl.core.system import hostsfile
from taskmuxd.dns.answers import Answerer
from tests.helpers import ProxyHarness, call, read, route, run_json, wait_until, write_config


@pytest.fixture
def dns_daemon(start_daemon: Any, home: str) -> ProxyHarness:
    write_config(home, 'host_resolver = "dns_server"\n')
    return ProxyHarness(start_daemon())


def resolver(port: int, tcp: bool = False) -> dns.resolver.Resolver:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = port
    r.lifetime = 5
    r.cache = None
    return r


def test_the_dns_server_answers_localhost_names_over_udp_and_tcp(
        dns_daemon: ProxyHarness) -> None:
    section = dns_daemon.status("dns")
    assert section["bound"] is True and section["resolver"] == "dns_server"
    port = section["port"]
    assert port and port != 5454  # a free port, never the real one, in tests
    r = resolver(port)
    for tcp in (False, True):
        a = r.resolve("api.shop.localhost", "A", tcp=tcp)
        assert [x.address for x in a] == ["127.0.0.1"]
        aaaa = r.resolve("Web.Other.LOCALHOST.", "AAAA", tcp=tcp)
        assert [x.address for x in aaaa] == ["::1"]
    # Names outside localhost are refused, so the server never speaks for a real domain.
    query = dns.message.make_query("example.com", "A")
    for send in (dns.query.udp, dns.query.tcp):
        reply = send(query, "127.0.0.1", port=port, timeout=5)
        assert reply.rcode() == dns.rcode.REFUSED and not reply.answer
    # Another type of a localhost name: no records, and the SOA that lets resolvers cache it.
    reply = dns.query.udp(dns.message.make_query("api.shop.localhost", "MX"), "127.0.0.1",
                          port=port, timeout=5)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    assert reply.authority and reply.authority[0].rdtype == dns.rdatatype.SOA
    assert reply.flags & dns.flags.AA
    # Several queries on one TCP connection.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for name in ("a.localhost", "b.x.localhost"):
            dns.query.send_tcp(s, dns.message.make_query(name, "A"), None)
            answer, _ = dns.query.receive_tcp(s, expiration=None)
            assert answer.answer[0][0].address == "127.0.0.1"
    assert dns_daemon.status("dns")["queries"] >= 7


def test_dns_query_command_asks_the_server(dns_daemon: ProxyHarness,
                                           env: dict[str, str]) -> None:
    code, out = run_json(["dns", "query", "api.shop.localhost", "--type", "AAAA"], env)
    assert code == 0, out
    assert out["status"] == "NOERROR"
    assert out["answers"] == [{"name": "api.shop.localhost.", "type": "AAAA", "ttl": 60,
                               "data": "::1"}]
    code, out = run_json(["dns", "query", "example.org"], env)
    assert code == 0 and out["status"] == "REFUSED" and out["answers"] == []


def test_dns_query_says_when_the_server_is_off(daemon: Any, env: dict[str, str]) -> None:
    code, out = run_json(["dns", "query", "api.shop.localhost"], env)
    assert code == 1
    assert "host_resolver is noop" in out["error"]
    assert "config set host_resolver dns_server" in out["error"]


def test_the_answerer_survives_garbage() -> None:
    answerer = Answerer()
    assert answerer.answer(b"\x00") is None  # too short for a header
    query = dns.message.make_query("api.shop.localhost", "A").to_wire()
    reply = answerer.answer(query)
    assert reply is not None and dns.message.from_wire(reply).answer
    assert answerer.answer(reply) is None  # a reply is never answered (no loops)
    broken = query[:12] + b"\x07trunc"
    formerr = answerer.answer(broken)
    assert formerr is not None and formerr[:2] == query[:2]
    assert formerr[3] & 0x0F == dns.rcode.FORMERR
    # Cached replies carry each query's own ID.
    again = bytearray(query)
    again[0:2] = b"\x12\x34"
    cached = answerer.answer(bytes(again))
    assert cached is not None and cached[:2] == b"\x12\x34" and cached[2:] == reply[2:]


USER_LINES = "127.0.0.1\tlocalhost\n# my own comment\n10.1.2.3 db.internal  # pinned\n"


def test_the_hosts_block_follows_the_routes_and_leaves_user_lines(
        start_daemon: Any, home: str) -> None:
    hosts_file = os.path.join(home, "hosts")
    with open(hosts_file, "w") as fh:
        fh.write(USER_LINES)
    write_config(home, 'host_resolver = "etc_hosts"\n')
    harness = ProxyHarness(start_daemon())
    harness.set_routes("shop", route("web", "web", 1), route("api", "api", 2),
                       route("rest", "*", 3))
    wait_until(lambda: hostsfile.block_names(read(hosts_file)), what="the hosts block")
    text = read(hosts_file)
    assert text.startswith(USER_LINES)
    assert hostsfile.block_names(text) == ["api.shop.localhost", "shop.localhost",
                                       "web.shop.localhost"]
    assert "127.0.0.1\tweb.shop.localhost" in text and "::1\tweb.shop.localhost" in text
    assert hostsfile.BEGIN in text and hostsfile.END in text
    # The names are recorded for the next start as root (which writes the real file).
    record = os.path.join(home, "hostnames.json")
    wait_until(lambda: "web.shop.localhost" in read(record), what="the record")
    harness.set_routes("shop", route("web", "web", 1))
    wait_until(lambda: hostsfile.block_names(read(hosts_file)) == ["shop.localhost",
                                                               "web.shop.localhost"],
               what="the block to shrink")
    harness.remove("shop")
    wait_until(lambda: read(hosts_file) == USER_LINES, what="the block to go")
    section = harness.status("dns")
    assert section["resolver"] == "etc_hosts" and section["missing"] == []


def test_dns_install_writes_the_block_with_the_daemons_names(
        start_daemon: Any, home: str, env: dict[str, str]) -> None:
    hosts_file = os.path.join(home, "hosts")
    with open(hosts_file, "w") as fh:
        fh.write(USER_LINES)
    os.chmod(home, 0o700)
    write_config(home, 'host_resolver = "etc_hosts"\n')
    harness = ProxyHarness(start_daemon())
    harness.set_routes("blog", route("web", "web", 1))
    wait_until(lambda: hostsfile.block_names(read(hosts_file)), what="the daemon's own write")
    with open(hosts_file, "w") as fh:  # as if the block were lost
        fh.write(USER_LINES)
    code, out = run_json(["dns", "install"], env)
    assert code == 0 and out["complete"] is True, out
    assert hostsfile.block_names(read(hosts_file)) == ["blog.localhost", "web.blog.localhost"]
    code, out = run_json(["dns", "uninstall"], env)
    assert code == 0 and read(hosts_file) == USER_LINES
    assert call(harness.daemon.socket, "dns.info")["hostnames"] == ["blog.localhost",
                                                                     "web.blog.localhost"]


@pytest.mark.parametrize(("before", "names", "after"), [
    ("a\nb\n", ["x.localhost"],
     f"a\nb\n{hostsfile.BEGIN}\n{hostsfile.NOTE}\n127.0.0.1\tx.localhost\n::1\tx.localhost\n"
     f"{hostsfile.END}\n"),
    # The block is rewritten where it stands; lines after it stay after it.
    (f"a\n{hostsfile.BEGIN}\n1.2.3.4 old.localhost\n{hostsfile.END}\nb\n", ["n.localhost"],
     f"a\n{hostsfile.BEGIN}\n{hostsfile.NOTE}\n127.0.0.1\tn.localhost\n::1\tn.localhost\n"
     f"{hostsfile.END}\nb\n"),
    (f"a\n{hostsfile.BEGIN}\nx\n{hostsfile.END}\nb\n", [], "a\nb\n"),
    # A BEGIN without an END is the user's text: nothing after it is swallowed.
    (f"a\n{hostsfile.BEGIN}\nmine\n", [],
     f"a\n{hostsfile.BEGIN}\nmine\n"),
    ("", [], ""),
])
def test_replace_block(before: str, names: list[str], after: str) -> None:
    assert hostsfile.replace_block(before, names) == after
    assert hostsfile.replace_block(after, names) == after  # idempotent


def test_hosts_write_is_atomic_and_keeps_the_mode(tmp_path: str) -> None:
    path = os.path.join(tmp_path, "hosts")
    with open(path, "w") as fh:
        fh.write(USER_LINES)
    os.chmod(path, 0o644)
    inode = os.stat(path).st_ino
    assert hostsfile.write(path, ["a.localhost"]) is True
    assert os.stat(path).st_ino != inode  # replaced by rename, never half-written
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert hostsfile.write(path, ["a.localhost"]) is False  # nothing to change
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_switching_the_resolver_needs_no_restart(daemon: Any, home: str,
                                                 env: dict[str, str]) -> None:
    harness = ProxyHarness(daemon)
    assert harness.status("dns")["resolver"] == "noop"
    code, out = run_json(["config", "set", "host_resolver", "dns_server"], env)
    assert code == 0 and out["daemon_reloaded"] is True
    port = wait_until(lambda: harness.status("dns").get("port"), what="the DNS server")
    reply = dns.query.tcp(dns.message.make_query("x.y.localhost", "A"), "127.0.0.1",
                          port=port, timeout=5)
    assert reply.answer[0][0].address == "127.0.0.1"
    run_json(["config", "set", "host_resolver", "noop"], env)
    wait_until(lambda: harness.status("dns")["resolver"] == "noop", what="the switch back")
    with pytest.raises(ConnectionRefusedError), \
            socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
