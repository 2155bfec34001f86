"""Running the actions that probes and lifecycle hooks share: exec, httpGet, tcpSocket (and grpc for probes).

exec runs the command in the container through the runtime (`runc exec`): exit code 0 is a
success, any other a failure whose output is the command's (at most 10 KiB, as the kubelet).
httpGet and tcpSocket connect from the agent to the pod's IP, which is reachable from the node
on the pod bridge (the kubelet probes from the host network namespace the same way). An httpGet
succeeds with a status from 200 to 399; redirects to the same host are followed, a redirect
elsewhere is a success with a warning, as the kubelet's prober does. Failure texts read as Go's
net/http errors do in the kubelet's events (`dial tcp 10.42.0.7:8080: connect: connection refused`).
A grpc probe calls grpc.health.v1.Health/Check over cleartext HTTP/2, written here frame by frame
(one stream, HPACK literals out; only the DATA frames are read back): SERVING is a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

from skiff.node.agent.probes import PROBE_AGENT, HttpTarget, Result
from skiff.node.runtime.runtime import Runtime

MAX_OUTPUT = 10 * 1024
MAX_REDIRECTS = 10


@dataclass(frozen=True)
class Outcome:
    result: Result
    output: str = ""
    warning: bool = False  # a success the kubelet warns about (a redirect it did not follow)
    error: str = ""  # the action could not be run at all (an Unknown result)


def _text(data: bytes) -> str:
    return data[:MAX_OUTPUT].decode("utf-8", "replace")


def _dial_error(host: str, port: int, exc: OSError) -> str:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    if isinstance(exc, ssl.SSLError):
        return f"remote error: {exc.reason or exc}"
    return f"dial tcp {address}: connect: {reason}"


async def run_exec(runtime: Runtime, container_id: str, command: list[str], limit: float | None) -> Outcome:
    """The command in the container; its combined output."""
    if not command:
        return Outcome(Result.UNKNOWN, error="exec: no command")
    try:
        res = await runtime.exec(container_id, [str(a) for a in command], time_limit=limit)
    except TimeoutError:
        return Outcome(Result.FAILURE, f"command {go_quote(' '.join(command))} timed out")
    except Exception as exc:  # the container is gone, runc refused...
        return Outcome(Result.UNKNOWN, error=str(exc) or type(exc).__name__)
    output = _text(res.stdout + res.stderr)
    if res.exit_code == 0:
        return Outcome(Result.SUCCESS, output)
    return Outcome(Result.FAILURE, output, error=f"command '{' '.join(command)}' exited with {res.exit_code}: "
                                                 f"{_text(res.stderr)}")  # fmt: skip


async def tcp_connect(host: str, port: int, limit: float) -> Outcome:
    try:
        async with asyncio.timeout(limit):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return Outcome(Result.FAILURE, f"dial tcp {address}: i/o timeout")
    except OSError as exc:
        return Outcome(Result.FAILURE, _dial_error(host, port, exc))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Outcome(Result.SUCCESS)


def _insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the kubelet's probes skip verification too
    return ctx


async def _fetch(target: HttpTarget) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET: status, headers (lower-case names), at most MAX_OUTPUT bytes of body."""
    tls = _insecure_tls() if target.scheme == "https" else None
    reader, writer = await asyncio.open_connection(target.host, target.port, ssl=tls,
                                                   server_hostname="" if tls else None)  # fmt: skip
    try:
        host = f"[{target.host}]" if ":" in target.host else target.host
        lines = [f"GET {target.path} HTTP/1.1"]
        if not any(name.lower() == "host" for name, _ in target.headers):
            lines.append(f"Host: {host}:{target.port}")
        lines += [f"{name}: {value}" for name, value in target.headers]
        lines += ["Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1", "replace"))
        await writer.drain()
        status_line = (await reader.readline()).decode("latin-1")
        parts = status_line.split()
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ConnectionError(f"malformed HTTP response {status_line.strip()!r}")
        headers: dict[str, str] = {}
        while (line := (await reader.readline()).decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        length = headers.get("content-length", "")
        want = min(int(length), MAX_OUTPUT) if length.isdigit() else MAX_OUTPUT
        while len(body) < want:
            chunk = await reader.read(want - len(body))
            if not chunk:
                break
            body += chunk
        return int(parts[1]), headers, body
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def http_get(target: HttpTarget, limit: float | None) -> Outcome:
    """As the kubelet's HTTP prober: 200-399 succeed; same-host redirects are followed."""
    first = target.url
    try:
        async with asyncio.timeout(limit):
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    status, headers, body = await _fetch(target)
                except OSError as exc:
                    return Outcome(Result.FAILURE, f'Get "{target.url}": {_dial_error(target.host, target.port, exc)}')
                location = headers.get("location", "")
                if status not in (301, 302, 303, 307, 308) or not location:
                    break
                moved = urlsplit(urljoin(target.url, location))
                if moved.hostname != target.host or moved.scheme not in ("http", "https"):
                    return Outcome(Result.SUCCESS, f"Probe terminated redirects, Response body: {_text(body)}",
                                   warning=True)  # fmt: skip
                path = moved.path or "/"
                target = replace(target, scheme=moved.scheme, path=path + (f"?{moved.query}" if moved.query else ""),
                                 port=moved.port or (443 if moved.scheme == "https" else 80))  # fmt: skip
            else:
                return Outcome(Result.FAILURE, f'Get "{target.url}": stopped after {MAX_REDIRECTS} redirects')
    except TimeoutError:
        return Outcome(
            Result.FAILURE, f'Get "{first}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
        )
    if 200 <= status < 400:
        if status >= 300:
            return Outcome(Result.SUCCESS, f"Probe terminated redirects, Response body: {_text(body)}", warning=True)
        return Outcome(Result.SUCCESS, _text(body))
    return Outcome(Result.FAILURE, f"HTTP probe failed with statuscode: {status}")


# --- gRPC health checking (grpc.health.v1.Health/Check over cleartext HTTP/2, as the kubelet's gRPC probe) --------
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
END_STREAM, END_HEADERS, ACK, PADDED, PRIORITY = 0x1, 0x4, 0x1, 0x8, 0x20
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = bytearray([first | limit]), value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def _hpack_str(text: str) -> bytes:
    raw = text.encode()
    return _hpack_int(len(raw), 7, 0) + raw  # no Huffman coding


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def health_request(authority: str, service: str) -> bytes:
    """The client's side of one Check call: preface, SETTINGS, HEADERS, DATA (HPACK literals, no index)."""
    headers = (
        b"\x83\x86"  # :method POST, :scheme http (static table)
        + _hpack_int(4, 4, 0) + _hpack_str("/grpc.health.v1.Health/Check")  # :path
        + _hpack_int(1, 4, 0) + _hpack_str(authority)  # :authority
        + _hpack_int(31, 4, 0) + _hpack_str("application/grpc")  # content-type
        + b"\x00" + _hpack_str("te") + _hpack_str("trailers")
        + _hpack_int(58, 4, 0) + _hpack_str(PROBE_AGENT)  # user-agent
    )  # fmt: skip
    message = b"\x0a" + _varint(len(service.encode())) + service.encode() if service else b""
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    return (
        H2_PREFACE
        + _frame(SETTINGS, 0, 0)
        + _frame(HEADERS, END_HEADERS, 1, headers)
        + _frame(DATA, END_STREAM, 1, body)
    )


def health_status(message: bytes) -> int | None:
    """`status` (field 1) of a HealthCheckResponse in a gRPC length-prefixed message."""
    if len(message) < 5 or message[0] != 0:
        return None
    data, i, status = message[5 : 5 + int.from_bytes(message[1:5], "big")], 0, 0
    while i < len(data):
        key = data[i]
        i += 1
        if key & 7 != 0:  # only varints are expected in this message
            return None
        value = shift = 0
        while i < len(data):
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 128:
                break
        if key >> 3 == 1:
            status = value
    return status


async def _health_call(host: str, port: int, service: str) -> tuple[bytes, str]:
    """(the response message, an error) of one Check call."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(health_request(f"{host}:{port}", service))
        await writer.drain()
        message = b""
        while True:
            head = await reader.readexactly(9)
            length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = await reader.readexactly(length)
            if kind == SETTINGS and not flags & ACK:
                writer.write(_frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                writer.write(_frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                return message, "the server sent GOAWAY"
            elif kind == RST_STREAM and stream == 1:
                return message, f"the server reset the stream (code {int.from_bytes(payload[:4], 'big')})"
            elif kind == DATA and stream == 1:
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                message += payload
            if kind in (DATA, HEADERS) and stream == 1 and flags & END_STREAM:
                return message, ""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def grpc_health(host: str, port: int, service: str, limit: float) -> Outcome:
    """As the kubelet's gRPC prober: Success when the server says SERVING for `service`."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with asyncio.timeout(limit):
            message, error = await _health_call(host, port, service)
    except TimeoutError:
        return Outcome(Result.FAILURE, f"timeout: health rpc did not complete within {limit:g}s")
    except (OSError, asyncio.IncompleteReadError) as exc:
        reason = _dial_error(host, port, exc) if isinstance(exc, OSError) else "the connection was closed"
        return Outcome(
            Result.FAILURE, f"timeout: failed to connect service {go_quote(address)} within {limit:g}s: {reason}"
        )
    status = health_status(message) if message else None
    if status is None:
        detail = error or "no health status in the answer (the service is unknown or not served)"
        return Outcome(Result.FAILURE, f"error: health rpc probe failed: {detail}")
    if status != 1:
        return Outcome(
            Result.FAILURE, f"service unhealthy (responded with {go_quote(HEALTH_STATUS.get(status, str(status)))})"
        )
    return Outcome(Result.SUCCESS, "service healthy")


def go_quote(text: str) -> str:
    """Go's %q of a string, near enough (double quotes, backslash escapes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
