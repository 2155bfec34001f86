"""Running the actions that probes and lifecycle hooks share: exec, httpGet, tcpSocket.

exec runs the command in the container through the runtime (`runc exec`): exit code 0 is a
success, any other a failure whose output is the command's (at most 10 KiB, as the kubelet).
httpGet and tcpSocket connect from the agent to the pod's IP, which is reachable from the node
on the pod bridge (the kubelet probes from the host network namespace the same way). An httpGet
succeeds with a status from 200 to 399; redirects to the same host are followed, a redirect
elsewhere is a success with a warning, as the kubelet's prober does. Failure texts read as Go's
net/http errors do in the kubelet's events (`dial tcp 10.42.0.7:8080: connect: connection refused`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

from skiff.node.agent.probes import HttpTarget, Result
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


def go_quote(text: str) -> str:
    """Go's %q of a string, near enough (double quotes, backslash escapes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
