"""Forwarding names outside the cluster to upstream resolvers, like CoreDNS's `forward` plugin.

A pod's resolv.conf points only at cluster DNS, so every other name
(example.com, the host's own domains, reverse names of non-cluster
addresses) must be passed on. The client's query goes unchanged (same id,
same EDNS size) to the first upstream over UDP, from a fresh socket with a
random source port; a reply with the TC bit is asked again over TCP
(2-byte length framing). An upstream that does not answer within the timeout
(or refuses with ICMP) is skipped for the next one; when none answers the
caller replies SERVFAIL. By default the upstreams are the host's
/etc/resolv.conf nameservers, minus the cluster DNS's own addresses, so that
a host pointed at cluster DNS does not make it forward to itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)
Upstream = tuple[str, int]
RESOLV_CONF = Path("/etc/resolv.conf")
TC_BIT = 0x0200


def parse_upstream(text: str, default_port: int = 53) -> Upstream:
    """`1.1.1.1`, `1.1.1.1:5353`, `fd00::1`, `[fd00::1]:5353` → (address, port)."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    ipaddress.ip_address(host)  # raises ValueError for names: upstreams are addresses
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return host, port


def resolv_conf_nameservers(path: Path = RESOLV_CONF) -> list[str]:
    """The `nameserver` addresses of a resolv.conf, in order (zone ids such as %eth0 dropped)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            out.append(fields[1].split("%", 1)[0])
    return out


def default_upstreams(
    exclude: Iterable[str] = (), path: Path = RESOLV_CONF, *, listen: Iterable[Upstream] = ()
) -> list[Upstream]:
    """The host's nameservers on port 53 other than `exclude` (the DNS Service's ClusterIP) and this
    server itself (see `is_self`)."""
    skip = {str(ipaddress.ip_address(a)) for a in exclude}
    listen = list(listen)
    out: list[Upstream] = []
    for ns in resolv_conf_nameservers(path):
        try:
            ip = str(ipaddress.ip_address(ns))
        except ValueError:
            continue
        if ip not in skip and not is_self(ip, listen) and (ip, 53) not in out:
            out.append((ip, 53))
    return out


def is_self(nameserver: str, listen: Iterable[Upstream]) -> bool:
    """Whether `nameserver` (port 53) is a server listening on `listen`: the same address on port 53, or
    a loopback address when it listens on the wildcard address on port 53."""
    ip = ipaddress.ip_address(nameserver)
    for host, port in listen:
        if port != 53:
            continue
        own = ipaddress.ip_address(host)
        if own == ip or (own.is_unspecified and ip.is_loopback):
            return True
    return False


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, query_id: bytes) -> None:
        self.query_id = query_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if data[:2] == self.query_id and not self.reply.done():  # anything else is not our answer
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc or ConnectionError("socket closed"))


async def query_udp(query: bytes, upstream: Upstream) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Reply(query[:2]), remote_addr=upstream)
    try:
        transport.sendto(query)
        return await protocol.reply
    finally:
        transport.close()


async def query_tcp(query: bytes, upstream: Upstream) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(struct.pack("!H", len(query)) + query)
        await writer.drain()
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)
    finally:
        writer.close()


def truncated(message: bytes) -> bool:
    return len(message) >= 4 and bool(struct.unpack("!H", message[2:4])[0] & TC_BIT)


class Forwarder:
    """Sends queries to upstream resolvers in order until one answers."""

    def __init__(self, upstreams: Sequence[Upstream], *, timeout: float = 2.0, total: float = 4.0) -> None:
        self.upstreams = list(upstreams)
        self.timeout = timeout  # for one upstream
        self.total = total  # for all of them: below the 5 s a glibc resolver waits before retrying

    async def forward(self, query: bytes) -> bytes | None:
        """The first upstream reply to `query` (complete, over TCP if UDP truncated it), or None."""
        if len(query) < 12:
            return None
        try:
            async with asyncio.timeout(self.total):
                for upstream in self.upstreams:
                    reply = await self._ask(query, upstream)
                    if reply is not None:
                        return reply
        except TimeoutError:
            pass
        log.debug("no upstream of %s answered", self.upstreams)
        return None

    async def _ask(self, query: bytes, upstream: Upstream) -> bytes | None:
        try:
            async with asyncio.timeout(self.timeout):
                reply = await query_udp(query, upstream)
        except (TimeoutError, OSError) as exc:
            log.debug("upstream %s:%d over UDP: %r", *upstream, exc)
            return None
        if not truncated(reply):
            return reply
        try:
            async with asyncio.timeout(self.timeout):
                full = await query_tcp(query, upstream)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("upstream %s:%d over TCP: %r", *upstream, exc)
            return reply  # the truncated answer: the client may try TCP itself
        return full if full[:2] == query[:2] else reply
