"""Answers of taskmux's DNS server, built with dnslib's codec (no I/O).

Every name under the managed TLD resolves to loopback: A 127.0.0.1 and AAAA ::1 (RFC 6761
reserves ``localhost`` for exactly this). Other record types of those names get an empty
NOERROR answer; names outside the TLD are REFUSED, so the server can never be used to answer
for a real domain.

Speed: dnslib parses every query. For the common answers (A, AAAA, ANY, REFUSED) the reply is
the query's own question section between a header and answer records that dnslib packed once
at start-up (their names point back at the question, so they fit any name); rarer answers are
built by dnslib in full. Replies depend only on the query's bytes after its ID, so they are
also cached by those bytes and reused with the new ID: only for queries of ordinary size
(``MAX_CACHED_QUERY``; a query may be up to 64 KiB over TCP), and the cache is emptied when
it holds ``MAX_CACHED`` entries or ``MAX_CACHED_BYTES``, so distinct queries cannot grow it
beyond a few megabytes.
"""

from __future__ import annotations

from dnslib import AAAA, QTYPE, RCODE, RR, SOA, A, DNSError, DNSLabel, DNSRecord

TTL = 60
MAX_CACHED = 4096
MAX_CACHED_QUERY = 512  # a question of the longest name with EDNS fits in far less
MAX_CACHED_BYTES = 2 * 1024 * 1024
HEADER_SIZE = 12
OPCODE_QUERY = 0


QCLASS_IN = 1


class Answerer:
    def __init__(self, tld: str = "localhost", ttl: int = TTL) -> None:
        self.tld = tld.strip(".").lower()
        self.ttl = ttl
        self._suffix = "." + self.tld
        self._tld_labels = tuple(label.encode() for label in self.tld.split("."))
        self._cache: dict[bytes, bytes] = {}
        self.cached_bytes = 0
        self._records = {qtype: self._answer_records(qtype)
                         for qtype in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY)}
        self.queries = 0
        self.refused = 0
        self.malformed = 0

    def _loopback(self, qtype: int, name: DNSLabel) -> list[RR]:
        out = []
        if qtype in (QTYPE.A, QTYPE.ANY):
            out.append(RR(name, QTYPE.A, rdata=A("127.0.0.1"), ttl=self.ttl))
        if qtype in (QTYPE.AAAA, QTYPE.ANY):
            out.append(RR(name, QTYPE.AAAA, rdata=AAAA("::1"), ttl=self.ttl))
        return out

    def _answer_records(self, qtype: int) -> tuple[int, bytes]:
        """(how many, the packed answer records) for ``qtype``, their owner name a pointer
        to the question's name: packed by dnslib for a sample question, then cut out."""
        sample = DNSRecord.question(f"sample.{self.tld}", QTYPE[qtype])
        question_size = len(sample.pack()) - HEADER_SIZE
        reply = sample.reply(ra=0, aa=1)
        answers = self._loopback(qtype, sample.q.qname)
        for rr in answers:
            reply.add_answer(rr)
        return len(answers), bytes(reply.pack())[HEADER_SIZE + question_size:]

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
        if len(query) <= MAX_CACHED_QUERY:
            size = len(key) + len(reply)
            if len(self._cache) >= MAX_CACHED or self.cached_bytes + size > MAX_CACHED_BYTES:
                self._cache.clear()
                self.cached_bytes = 0
            self._cache[key] = reply[2:]
            self.cached_bytes += size
        return reply

    def _build(self, query: bytes) -> bytes:
        try:
            request = DNSRecord.parse(query)
        except (DNSError, ValueError, IndexError, UnicodeError):
            self.malformed += 1
            return _header_only(query, RCODE.FORMERR)
        if request.header.opcode != OPCODE_QUERY or len(request.questions) != 1:
            reply = request.reply(ra=0, aa=1)
            reply.header.rcode = (RCODE.NOTIMP if request.header.opcode != OPCODE_QUERY
                                  else RCODE.FORMERR)
            return bytes(reply.pack())
        q = request.q
        labels = q.qname.label
        question_end = HEADER_SIZE + sum(len(label) + 1 for label in labels) + 1 + 4
        question = query[HEADER_SIZE:question_end]
        n = len(self._tld_labels)
        ours = tuple(label.lower() for label in labels[-n:]) == self._tld_labels
        if not ours or q.qclass != QCLASS_IN:
            self.refused += 1
            return _header(query, RCODE.REFUSED, 0, authoritative=False) + question
        records = self._records.get(q.qtype)
        if records is not None:
            count, packed = records
            return _header(query, RCODE.NOERROR, count, authoritative=True) + question + packed
        reply = request.reply(ra=0, aa=1)
        for rr in self._loopback(q.qtype, q.qname):
            reply.add_answer(rr)
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


def _header(query: bytes, rcode: int, answers: int, *, authoritative: bool) -> bytes:
    """A reply's header for ``query``: its ID, opcode and RD; QR set; one question."""
    flags1 = 0x80 | (query[2] & 0x79) | (0x04 if authoritative else 0)  # QR, opcode, RD, AA
    return query[:2] + bytes([flags1, rcode & 0x0F, 0, 1, 0, answers, 0, 0, 0, 0])


def _header_only(query: bytes, rcode: int) -> bytes:
    """A reply carrying only a header: the query's ID and opcode, QR set, ``rcode``."""
    flags1 = 0x80 | (query[2] & 0x78) | (query[2] & 0x01)  # QR, opcode, RD
    return query[:2] + bytes([flags1, rcode & 0x0F]) + b"\x00" * 8
