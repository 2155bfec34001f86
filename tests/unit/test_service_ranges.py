"""Range math and messages of the service IP and node port allocators (no storage)."""

from __future__ import annotations

import random

import pytest

from skiff.apiserver.allocation import Owner
from skiff.apiserver.ipalloc import ServiceIPRange, decode_record, encode_record, range_offset
from skiff.apiserver.portalloc import NodePortRange
from skiff.apiserver.portalloc import range_offset as port_range_offset


def test_default_range_addresses() -> None:
    r = ServiceIPRange.parse("10.43.0.0/16")
    assert r.family == "IPv4"
    assert r.kubernetes_ip == "10.43.0.1"
    assert r.dns_ip == "10.43.0.10"
    assert r.size == 65534  # less the network and broadcast addresses
    assert r.offset == 256
    assert r.address(r.last) == "10.43.255.254"


@pytest.mark.parametrize(
    ("ip", "inside"),
    [
        ("10.43.0.1", True),
        ("10.43.255.254", True),
        ("10.43.0.0", False),  # network address
        ("10.43.255.255", False),  # broadcast address
        ("10.44.0.5", False),
        ("fd00::1", False),
        ("not-an-ip", False),
    ],
)
def test_contains(ip: str, inside: bool) -> None:
    assert ServiceIPRange.parse("10.43.0.0/16").contains(ip) is inside


@pytest.mark.parametrize(("size", "offset"), [(8, 0), (16, 0), (32, 16), (256, 16), (1024, 64), (65536, 256)])
def test_ip_band_sizes_follow_kep_3070(size: int, offset: int) -> None:
    assert range_offset(size) == offset


def test_dynamic_candidates_prefer_upper_band_and_skip_reserved() -> None:
    r = ServiceIPRange.parse("10.43.0.0/24")  # 254 usable, lower band of 16
    order = list(r.dynamic_candidates(random.Random(1)))
    assert len(order) == len(set(order)) == 254 - 2  # every address once, less kubernetes and DNS
    assert "10.43.0.1" not in order and "10.43.0.10" not in order
    upper = order[: 254 - 16]
    assert all(int(ip.rsplit(".", 1)[1]) > 16 for ip in upper)
    assert all(int(ip.rsplit(".", 1)[1]) <= 16 for ip in order[len(upper) :])


def test_ipv6_range() -> None:
    r = ServiceIPRange.parse("fd00:43::/112")
    assert r.family == "IPv6"
    assert r.kubernetes_ip == "fd00:43::1"
    assert r.contains("fd00:43::ffff")  # no broadcast address in IPv6
    with pytest.raises(ValueError, match="shortest allowed prefix length"):
        ServiceIPRange.parse("fd00::/48")


@pytest.mark.parametrize("bad", ["10.43.0.0/30", "nonsense", "10.43.0.0/40"])
def test_bad_cidrs(bad: str) -> None:
    with pytest.raises(ValueError):
        ServiceIPRange.parse(bad)


def test_not_in_range_message() -> None:
    err = ServiceIPRange.parse("10.43.0.0/16").not_in_range("10.44.0.5")
    assert str(err) == "provided IP 10.44.0.5 is not in the valid range"


def test_ip_record_is_an_ipaddress_object() -> None:
    owner = Owner("default", "web", "uid-1")
    raw = encode_record("10.43.0.5", owner)
    import orjson

    obj = orjson.loads(raw)
    assert obj["kind"] == "IPAddress" and obj["apiVersion"] == "networking.k8s.io/v1"
    assert obj["spec"]["parentRef"] == {"group": "", "resource": "services", "namespace": "default", "name": "web"}
    decoded, created = decode_record(raw)
    assert decoded == owner and created > 0
    assert decode_record(b"garbage") == (None, 0.0)


@pytest.mark.parametrize(
    ("text", "base", "last"),
    [("30000-32767", 30000, 32767), ("30000+2767", 30000, 32767), (" 80 - 90 ", 80, 90), ("5-5", 5, 5)],
)
def test_port_range_parse(text: str, base: int, last: int) -> None:
    r = NodePortRange.parse(text)
    assert (r.base, r.last) == (base, last)
    assert str(r) == f"{base}-{last}"


@pytest.mark.parametrize("bad", ["", "30000", "32767-30000", "0-10", "1-70000", "a-b"])
def test_bad_port_ranges(bad: str) -> None:
    with pytest.raises(ValueError):
        NodePortRange.parse(bad)


def test_node_port_bands_and_message() -> None:
    r = NodePortRange.parse("30000-32767")
    assert r.offset == port_range_offset(2768) == 86
    order = [int(p) for p in r.dynamic_candidates(random.Random(7))]
    assert sorted(order) == list(range(30000, 32768))
    assert all(p >= 30086 for p in order[: 2768 - 86])
    assert str(r.not_in_range()) == ("provided port is not in the valid range. The range of valid ports is 30000-32767")
    assert not r.contains(29999) and r.contains(30000) and r.contains(32767) and not r.contains(32768)
