"""The names and addresses this host can be reached by, for the serving certificate's SANs.

Read with `ip -j addr` where available, else from /proc, plus what the host
name resolves to. Plain blocking code: the server calls it through
`asyncio.to_thread` (via `pki.ensure_pki`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import socket
import subprocess
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_names() -> list[str]:
    """The host's short name and fully qualified name (lower case)."""
    names: list[str] = []
    hostname = socket.gethostname()
    names.append(hostname)
    with contextlib.suppress(OSError):
        names.append(socket.getfqdn(hostname))
    return [n.lower() for n in dict.fromkeys(names) if n and n.lower() != "localhost"]


def host_addresses() -> list[IPAddress]:
    """Every non-loopback, non-link-local address of the host's interfaces.

    Read with `ip -j addr` when available, else from /proc; addresses the
    host name resolves to are added. Link-local addresses are left out: a
    client cannot use them without a zone, which certificates cannot carry.
    """
    found: list[IPAddress] = _addresses_from_ip_command()
    if not found:
        found = _ipv4_from_proc() + _ipv6_from_proc()
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP):
            found.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
    return [ip for ip in dict.fromkeys(found) if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)]


def _addresses_from_ip_command() -> list[IPAddress]:
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, check=True, timeout=5, text=True).stdout
        interfaces = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    found: list[IPAddress] = []
    for iface in interfaces if isinstance(interfaces, list) else []:
        for addr in iface.get("addr_info", []) if isinstance(iface, dict) else []:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                found.append(ipaddress.ip_address(addr["local"]))
    return found


def _ipv4_from_proc() -> list[IPAddress]:
    """Local IPv4 addresses: the `/32 host LOCAL` leaves of /proc/net/fib_trie."""
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return []
    found: list[IPAddress] = []
    for previous, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line and "|--" in previous:
            with contextlib.suppress(ValueError):
                found.append(ipaddress.ip_address(previous.split("|--")[1].strip()))
    return found


def _ipv6_from_proc() -> list[IPAddress]:
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return []
    found: list[IPAddress] = []
    for line in lines:
        fields = line.split()
        if fields and len(fields[0]) == 32:
            with contextlib.suppress(ValueError):
                found.append(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
    return found
