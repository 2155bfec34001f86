"""SPDY/3.1 framing and the port-forward session over it (a loopback echo server stands in for the pod)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

import pytest

from skiff.node.agent import portforward, spdy


def test_the_dictionary_is_spdy3s() -> None:
    d = spdy.DICTIONARY
    assert len(d) == 1423  # the spec's size
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head") and d.endswith(b",*,enq=0.")
    assert b"\x00\x00\x00\x06origin100101201" in d


def test_frames_round_trip_between_two_codecs() -> None:
    sender, receiver = spdy.Codec(), spdy.Codec()
    frames: list[spdy.Frame] = [
        spdy.SynStream(1, {"streamtype": ["error"], "port": ["8080"], "requestid": ["0"]}, priority=2),
        spdy.SynStream(3, {"streamtype": ["data"], "port": ["8080"], "requestid": ["0"]}, flags=spdy.FLAG_FIN),
        spdy.SynReply(3, {"x": ["a", "b"]}),
        spdy.HeadersFrame(3, {"y": ["z"]}),
        spdy.Data(3, b"hello" * 1000),
        spdy.Data(3, b"", spdy.FLAG_FIN),
        spdy.RstStream(3, spdy.CANCEL),
        spdy.Settings([(0, 7, 65536)]),
        spdy.Ping(5),
        spdy.WindowUpdate(3, 1024),
        spdy.GoAway(3, 0),
    ]
    wire = b"".join(sender.encode(f) for f in frames)
    assert receiver.feed(wire) == frames


def test_partial_input_waits_for_the_rest() -> None:
    sender, receiver = spdy.Codec(), spdy.Codec()
    frames: list[spdy.Frame] = [spdy.SynStream(1, {"port": ["80"]}), spdy.Data(1, b"abc"), spdy.Ping(2)]
    wire = b"".join(sender.encode(f) for f in frames)
    got: list[spdy.Frame] = []
    for i in range(len(wire)):
        got += receiver.feed(wire[i : i + 1])
    assert got == frames


def test_wire_format() -> None:
    codec = spdy.Codec()
    assert codec.encode(spdy.Data(5, b"hi", spdy.FLAG_FIN)) == b"\x00\x00\x00\x05\x01\x00\x00\x02hi"
    assert codec.encode(spdy.Ping(7)) == b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x07"
    reply = codec.encode(spdy.SynReply(1))
    assert reply[:4] == b"\x80\x03\x00\x02" and reply[8:12] == b"\x00\x00\x00\x01"
    # the header block is zlib with the SPDY dictionary: a plain inflater cannot read it
    block = reply[12:]
    inflater = zlib.decompressobj()
    with pytest.raises(zlib.error):
        inflater.decompress(block)
    assert zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(block) == b"\x00\x00\x00\x00"


def test_header_compression_is_one_context_per_direction() -> None:
    sender = spdy.Codec()
    first = sender.encode(spdy.SynStream(1, {"port": ["80"]}))
    second = sender.encode(spdy.SynStream(3, {"port": ["80"]}))
    assert len(second) < len(first)  # the second block refers back to the first
    with pytest.raises(spdy.ProtocolError):
        spdy.Codec().feed(second)  # not decodable without the first


def test_bad_input() -> None:
    with pytest.raises(spdy.ProtocolError, match="version 2"):
        spdy.Codec().feed(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x07")
    # an unknown control frame is skipped
    assert spdy.Codec().feed(b"\x80\x03\x00\x0a\x00\x00\x00\x00" + spdy.Codec().encode(spdy.Ping(1))) == [
        spdy.Ping(1)]  # fmt: skip


class Client:
    """kubectl's side of a port-forward session, in memory."""

    def __init__(self) -> None:
        self.codec = spdy.Codec()  # for what the client sends
        self.inbound = spdy.Codec()  # for what the server sends
        self.received: list[spdy.Frame] = []
        self.changed = asyncio.Event()

    async def server_sent(self, data: bytes) -> None:
        self.received += self.inbound.feed(data)
        self.changed.set()

    async def wait_for(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    def data(self, stream_id: int) -> bytes:
        return b"".join(f.data for f in self.received if isinstance(f, spdy.Data) and f.stream_id == stream_id)

    def fin(self, stream_id: int) -> bool:
        return any(isinstance(f, spdy.Data) and f.stream_id == stream_id and f.flags & spdy.FLAG_FIN
                   for f in self.received)  # fmt: skip


async def test_a_session_forwards_a_connection_both_ways() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"echo:" + await reader.read())  # reads until the client's FIN
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dialed: list[int] = []

    async def dial(p: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        dialed.append(p)
        return await asyncio.open_connection("127.0.0.1", port)

    client = Client()
    session = portforward.Session(client.server_sent, dial, pod="web")
    try:
        send = client.codec.encode
        await session.feed(send(spdy.SynStream(1, {"streamtype": ["error"], "port": ["80"], "requestid": ["0"]})))
        await session.feed(send(spdy.SynStream(3, {"streamtype": ["data"], "port": ["80"], "requestid": ["0"]})))
        await session.feed(send(spdy.Data(3, b"ping")) + send(spdy.Data(3, b"", spdy.FLAG_FIN)))
        await client.wait_for(lambda: client.fin(3))
        assert dialed == [80]
        assert [f.stream_id for f in client.received if isinstance(f, spdy.SynReply)] == [1, 3]
        assert client.data(3) == b"echo:ping"
        assert client.data(1) == b""  # no error
        # a ping is answered
        await session.feed(send(spdy.Ping(9)))
        await client.wait_for(lambda: spdy.Ping(9) in client.received)
    finally:
        await session.close()
        server.close()
        await server.wait_closed()


async def test_a_refused_port_is_reported_on_the_error_stream() -> None:
    async def dial(p: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise ConnectionRefusedError(111, "Connection refused")

    client = Client()
    session = portforward.Session(client.server_sent, dial, pod="web")
    send = client.codec.encode
    await session.feed(send(spdy.SynStream(1, {"streamtype": ["error"], "port": ["81"], "requestid": ["7"]})))
    await session.feed(send(spdy.SynStream(3, {"streamtype": ["data"], "port": ["81"], "requestid": ["7"]})))
    await client.wait_for(lambda: client.fin(1) and client.fin(3))
    assert b"error forwarding port 81 to pod web" in client.data(1)
    assert b"Connection refused" in client.data(1)
    await session.close()
