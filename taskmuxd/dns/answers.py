"""Answers of taskmux's DNS server, built with dnslib's codec (no I/O).

Every name under the managed TLD resolves to loopback: A 127.0.0.1 and AAAA ::1 (RFC 6761
reserves ``localhost`` for exactly this). Other record types of those names get an empty
NOERROR answer; names outside the TLD are REFUSED, so the server can never be used to answer
for a real domain. Replies depend only on the query's bytes after its ID, so they are cached by
those bytes and reused with the new ID.
"""

from __future__ import annotations

from dnslib import AAAA, QTYPE, RCODE, RR, SOA, A, DNSError, DNSLabel, DNSRecord

TTL = 60
MAX_CACHED = 4096
HEADER_SIZE = 12
OPCODE_QUERY = 0


class Answerer:
    def __init__(self, tld: str = "localhost", ttl: int = TTL) -> None:
        self.tld = tld.strip(".").lower()
        self.ttl = ttl
        self._suffix = "." + self.tld
        self._cache: dict[bytes, bytes] = {}
        self.queries = 0
        self.refused = 0
        self.malformed = 0

    def covers(self, name: str) -> bool:
        name = name.rstrip(".").lower()
        return name == self.tld or name.endswith(self._suffix)

    def answer(self, query: bytes) -> bytes | None:
        """The reply to one DNS message, or None when it deserves no reply."""
        self.queries += 1
        if len(query) < HEADER_SIZE or query[2] & 0x80:  # too short, or itself a reply
            self.malformed += 1
            return None
        key = query[2:]
        cached = self._cache.get(key)
        if cached is not None:
            if cached[1] & 0x0F == RCODE.REFUSED:
                self.refused += 1
            return query[:2] + cached
        reply = self._build(query)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key] = reply[2:]
        return reply

    def _build(self, query: bytes) -> bytes:
        try:
            request = DNSRecord.parse(query)
        except (DNSError, ValueError, IndexError, UnicodeError):
            self.malformed += 1
            return _header_only(query, RCODE.FORMERR)
        reply = request.reply(ra=0, aa=1)
        if request.header.opcode != OPCODE_QUERY:
            reply.header.rcode = RCODE.NOTIMP
            return bytes(reply.pack())
        if len(request.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
            return bytes(reply.pack())
        q = request.q
        if not self.covers(str(q.qname)):
            self.refused += 1
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return bytes(reply.pack())
        if q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(q.qname, QTYPE.A, rdata=A("127.0.0.1"), ttl=self.ttl))
        if q.qtype in (QTYPE.AAAA, QTYPE.ANY):
            reply.add_answer(RR(q.qname, QTYPE.AAAA, rdata=AAAA("::1"), ttl=self.ttl))
        if not reply.rr:
            # The name exists but has no record of this type: say so with the zone's SOA,
            # which lets resolvers cache the empty answer.
            reply.add_auth(self._soa())
        return bytes(reply.pack())

    def _soa(self) -> RR:
        zone = DNSLabel(self.tld)
        return RR(zone, QTYPE.SOA, ttl=self.ttl,
                  rdata=SOA(DNSLabel(f"ns.{self.tld}"), DNSLabel(f"hostmaster.{self.tld}"),
                            (1, 3600, 600, 86400, self.ttl)))


def _header_only(query: bytes, rcode: int) -> bytes:
    """A reply carrying only a header: the query's ID and opcode, QR set, ``rcode``."""
    flags1 = 0x80 | (query[2] & 0x78) | (query[2] & 0x01)  # QR, opcode, RD
    return query[:2] + bytes([flags1, rcode & 0x0F]) + b"\x00" * 8
