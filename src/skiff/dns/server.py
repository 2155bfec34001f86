"""The DNS server's sockets: UDP datagrams and TCP streams in, answers out, on the event loop.

Wire format is dnslib's; what to answer is `skiff.dns.records.Resolver`'s.
Names in the cluster domain (and reverse names of cluster addresses) are
answered at once from the informer caches, without a task (and repeated
questions from a reply cache emptied on every change); every other
question is forwarded upstream in a task of its own (at most `max_pending`
at a time: beyond, queries are dropped, as an overloaded resolver does, and
the client retries). UDP answers larger than the client can take (512 bytes,
or its EDNS0 size) go out truncated with TC set, so that it asks again over
TCP; TCP uses the 2-byte length framing of RFC 1035 §4.2.2, several queries
per connection, and closes idle connections.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, cast

from dnslib import CLASS, EDNS0, OPCODE, QTYPE, RCODE, DNSError, DNSHeader, DNSRecord

from skiff.dns.forward import Forwarder
from skiff.dns.records import Answer, Resolver, is_reverse

log = logging.getLogger(__name__)
UDP_DEFAULT = 512
EDNS_SIZE = 1232  # the DNS flag day 2020 payload size: no IP fragmentation
TCP_IDLE = 10.0
REPLY_CACHE = 10_000  # remembered replies; all forgotten at once when full or when the caches change


def _header_error(data: bytes, rcode: int) -> bytes | None:
    """An error reply built from the header alone (for queries dnslib cannot parse)."""
    if len(data) < 12:
        return None
    query_id, flags = struct.unpack("!HH", data[:4])
    if flags & 0x8000:
        return None  # a response: never answer one
    opcode = (flags >> 11) & 0xF
    reply_flags = 0x8000 | (opcode << 11) | (flags & 0x0100) | 0x0080 | rcode
    return struct.pack("!HHHHHH", query_id, reply_flags, 0, 0, 0, 0)


def _udp_limit(request: Any) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_DEFAULT, min(int(rr.rclass), 65535))
    return UDP_DEFAULT


class DnsServer:
    """Turns query bytes into reply bytes: local answers synchronously, forwarded ones in tasks."""

    def __init__(self, resolver: Resolver, forwarder: Forwarder | None, *, max_pending: int = 1000) -> None:
        self.resolver = resolver
        self.forwarder = forwarder
        self.max_pending = max_pending
        self.tasks: set[asyncio.Task[Any]] = set()
        self._replies: dict[tuple[bytes, bool], bytes] = {}  # (query after its id, over UDP?) → reply after its id
        self._generation = resolver.generation

    # --- answering ---------------------------------------------------------------------------
    def local(self, data: bytes, *, udp: bool) -> bytes | DNSRecord | None:
        """The reply bytes when this server answers itself; the parsed request when it must be forwarded;
        None when the datagram gets no reply at all.

        Replies are remembered by the query's bytes after its id until the caches change: a repeated
        question (the common case) costs a dict lookup instead of dnslib's parse and pack.
        """
        if self._generation != self.resolver.generation:
            self._replies.clear()
            self._generation = self.resolver.generation
        key = (bytes(data[2:]), udp)
        cached = self._replies.get(key)
        if cached is not None:
            return bytes(data[:2]) + cached
        result = self._local(data, udp=udp)
        if isinstance(result, bytes) and len(data) <= 512:
            if len(self._replies) >= REPLY_CACHE:
                self._replies.clear()
            self._replies[key] = result[2:]
        return result

    def _local(self, data: bytes, *, udp: bool) -> bytes | DNSRecord | None:
        try:
            request = DNSRecord.parse(data)
        except (DNSError, Exception):  # dnslib raises several kinds on garbage
            return _header_error(data, RCODE.FORMERR)
        if request.header.qr:
            return None
        if request.header.opcode != OPCODE.QUERY:
            return self._error(request, RCODE.NOTIMP, udp)
        if len(request.questions) != 1:
            return self._error(request, RCODE.FORMERR, udp)
        try:
            return self._answer(request, udp)
        except Exception:  # a bug must cost one answer, not the server
            log.exception("answering %s", request.q)
            return self._error(request, RCODE.SERVFAIL, udp)

    def _answer(self, request: DNSRecord, udp: bool) -> bytes | DNSRecord:
        q = request.q
        qname, qtype = str(q.qname), int(q.qtype)
        if self.resolver.in_zone(qname):
            if q.qclass not in (CLASS.IN, 255):  # IN or ANY
                return self._error(request, RCODE.REFUSED, udp)
            answer = self.resolver.resolve(qname, qtype)
            if answer.chase is not None:
                return request  # the CNAME's target lives outside: resolved upstream, then answered
            return self._pack(request, answer, udp)
        if is_reverse(qname):
            reverse = self.resolver.resolve_reverse(qname, qtype)
            if reverse is not None:
                return self._pack(request, reverse, udp)
        return request

    async def remote(self, request: DNSRecord, data: bytes, *, udp: bool) -> bytes:
        """The reply to a question this server passes upstream (SERVFAIL when no upstream answers)."""
        qname, qtype = str(request.q.qname), int(request.q.qtype)
        if self.resolver.in_zone(qname):  # an ExternalName: the CNAME, then the target's records from upstream
            answer = self.resolver.resolve(qname, qtype)
            assert answer.chase is not None
            chased = await self._forward(DNSRecord.question(answer.chase, QTYPE.get(qtype)).pack())
            if chased is not None:
                try:
                    extra = DNSRecord.parse(chased)
                    answer = Answer(extra.header.rcode, [*answer.answer, *extra.rr])
                except Exception:
                    log.debug("unparsable upstream answer for %s", answer.chase)
            return self._pack(request, answer, udp)
        reply = await self._forward(data)
        if reply is None:
            return self._error(request, RCODE.SERVFAIL, udp)
        if udp and len(reply) > _udp_limit(request):
            return self._truncated(request)
        return reply

    def forward_budget(self) -> float:
        """How long a forwarded question may take at most."""
        return self.forwarder.total + 0.5 if self.forwarder is not None else 0.5

    async def _forward(self, data: bytes) -> bytes | None:
        if self.forwarder is None or not self.forwarder.upstreams:
            return None
        return await self.forwarder.forward(data)

    def _reply(self, request: DNSRecord, rcode: int) -> DNSRecord:
        reply = DNSRecord(
            DNSHeader(id=request.header.id, qr=1, aa=0, ra=1, rd=request.header.rd, opcode=request.header.opcode),
            q=request.q if request.questions else None,
        )
        reply.header.rcode = rcode
        if any(rr.rtype == QTYPE.OPT for rr in request.ar):
            reply.add_ar(EDNS0(udp_len=EDNS_SIZE))
        return reply

    def _error(self, request: DNSRecord, rcode: int, udp: bool) -> bytes:
        return bytes(self._reply(request, rcode).pack())

    def _truncated(self, request: DNSRecord) -> bytes:
        reply = self._reply(request, RCODE.NOERROR)
        reply.header.tc = 1
        return bytes(reply.pack())

    def _pack(self, request: DNSRecord, answer: Answer, udp: bool) -> bytes:
        reply = self._reply(request, answer.rcode)
        reply.header.aa = 1
        for rr in answer.answer:
            reply.add_answer(rr)
        for rr in answer.authority:
            reply.add_auth(rr)
        for rr in answer.additional:
            reply.add_ar(rr)
        data = bytes(reply.pack())
        if udp and len(data) > _udp_limit(request):
            if answer.additional:  # the additional section is optional: drop it first
                return self._pack(request, Answer(answer.rcode, answer.answer, answer.authority), udp)
            return self._truncated(request)
        return data

    # --- tasks -------------------------------------------------------------------------------
    def spawn(self, request: DNSRecord, data: bytes, *, udp: bool, send: Any) -> None:
        """Forward in a task and `send(reply)` when it is back (dropped when too many are pending)."""
        if len(self.tasks) >= self.max_pending:
            log.warning("%d forwarded queries pending: dropping one for %s", len(self.tasks), request.q.qname)
            return

        async def run() -> None:
            send(await self.remote(request, data, udp=udp))

        task = asyncio.create_task(run(), name=f"dns/forward/{request.q.qname}")
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("forwarding failed", exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2.0)


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        transport = self.transport
        if transport is None:
            return
        result = self.server.local(data, udp=True)
        if isinstance(result, bytes):
            transport.sendto(result, addr)
        elif result is not None:
            self.server.spawn(result, data, udp=True, send=lambda reply: self._send(reply, addr))

    def _send(self, reply: bytes, addr: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp: %r", exc)  # ICMP errors for replies to clients gone away


async def serve_tcp_connection(server: DnsServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Queries of one TCP connection until the client closes or idles.

    Pipelined queries are allowed (RFC 7766 §6.2.1.1): local answers go out at once, forwarded ones
    when they are back, possibly out of order (the client matches them by id).
    """
    pending: set[asyncio.Task[Any]] = set()

    def send(reply: bytes) -> None:
        if not writer.is_closing():
            writer.write(struct.pack("!H", len(reply)) + reply)

    try:
        while True:
            try:
                async with asyncio.timeout(TCP_IDLE):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
            except (TimeoutError, asyncio.IncompleteReadError):
                return
            result = server.local(data, udp=False)
            if isinstance(result, bytes):
                send(result)
            elif result is not None:
                task = asyncio.create_task(server.remote(result, data, udp=False))
                task.add_done_callback(lambda t: None if t.cancelled() or t.exception() else send(t.result()))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await writer.drain()
    except (ConnectionError, OSError) as exc:
        log.debug("tcp: %r", exc)
    finally:
        if pending:  # answers still on their way (a client that half-closed after asking)
            await asyncio.wait(pending, timeout=server.forward_budget())
        writer.close()
