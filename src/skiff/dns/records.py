"""Which DNS records the cluster's Services, EndpointSlices and Pods make: the pure part of cluster DNS.

Kubernetes' DNS-based service discovery specification (kubernetes/dns,
docs/specification.md), as CoreDNS's `kubernetes` plugin serves it. For the
cluster domain `<zone>` (cluster.local by default):

- `<svc>.<ns>.svc.<zone>` A/AAAA: the ClusterIP(s); for a headless Service
  one record per ready endpoint address (NXDOMAIN when none is ready);
  an ExternalName Service is a CNAME to its externalName;
- `<hostname>.<svc>.<ns>.svc.<zone>`: the addresses of the ready endpoints of
  that hostname: the endpoint's `hostname` (StatefulSet pods), else its first
  address with dashes (`10-42-0-7`), as CoreDNS names them;
- `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV for named ports: the Service
  name and port, or for a headless Service one record per ready endpoint with
  its hostname as target and the endpoint's port (what is reachable on the
  pod, as in CoreDNS); the targets' addresses go into the additional section;
- `<a-b-c-d>.<ns>.pod.<zone>` A (AAAA for `1-2--3`): the address itself
  ("pods insecure", kubeadm's default), only for a pod that has it
  ("verified"), or never ("disabled");
- PTR in in-addr.arpa / ip6.arpa for ClusterIPs and headless endpoints;
- `dns-version.<zone>` TXT "1.1.0"; SOA and NS at the zone apex.

A name that does not exist is NXDOMAIN, one that exists without records of
the asked type is NODATA; both carry the zone's SOA in the authority section
(negative caching for the TTL, 5 s by default like CoreDNS). Names are
compared case-insensitively; answers repeat the question's own spelling.

The data are informer caches (`skiff.client.Cache`): the server reads them on
every query, with indexes added here, and never copies or changes them.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A

from skiff.client.cache import Cache

Obj = dict[str, Any]
PodsMode = Literal["insecure", "verified", "disabled"]
SCHEMA_VERSION = "1.1.0"
DEFAULT_TTL = 5
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
BY_NAMESPACE, BY_IP, BY_SERVICE = "dns/namespace", "dns/ip", "dns/service"
Rdata = tuple[int, Any]  # (QTYPE, dnslib rdata)


def _ns(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def cluster_ips(service: Obj) -> list[str]:
    spec = service.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if ip and ip != "None"]


def is_headless(service: Obj) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def _service_ips(service: Obj) -> list[str]:
    return [] if (service.get("spec") or {}).get("type") == "ExternalName" else cluster_ips(service)


def _slice_service(sl: Obj) -> list[str]:
    name = ((sl.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{_ns(sl)}/{name}"] if name else []


def _slice_ips(sl: Obj) -> list[str]:
    return [a for ep in sl.get("endpoints") or [] for a in ep.get("addresses") or []]


def _pod_ips(pod: Obj) -> list[str]:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or []] or [status.get("podIP")]
    return [f"{_ns(pod)}/{ip}" for ip in ips if ip]


def _ensure_index(cache: Cache, name: str, fn: Any) -> None:
    try:
        cache.add_index(name, fn)
    except ValueError:
        pass  # added already (a second resolver over the same caches)


def dashed(ip: str) -> str:
    """An address as one DNS label: 10.42.0.7 → 10-42-0-7, fd00::1 → fd00--1."""
    return ip.replace(".", "-").replace(":", "-")


def undashed(label: str) -> str | None:
    """The address a dashed label names, or None."""
    for candidate in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def _addr_record(ip: str) -> Rdata:
    return (QTYPE.AAAA, AAAA(ip)) if ":" in ip else (QTYPE.A, A(ip))


@dataclass(frozen=True)
class Endpoint:
    hostname: str
    addresses: tuple[str, ...]


@dataclass
class ClusterData:
    """The informer caches DNS answers from; indexes are added to them here."""

    services: Cache
    slices: Cache
    pods: Cache | None = None  # only for pods "verified"

    def __post_init__(self) -> None:
        _ensure_index(self.services, BY_NAMESPACE, lambda o: [_ns(o)])
        _ensure_index(self.services, BY_IP, _service_ips)
        _ensure_index(self.slices, BY_SERVICE, _slice_service)
        _ensure_index(self.slices, BY_IP, _slice_ips)
        if self.pods is not None:
            _ensure_index(self.pods, BY_IP, _pod_ips)

    def ready_endpoints(self, service: Obj) -> list[Endpoint]:
        """The ready endpoints of `service` over all its slices, deduplicated by (hostname, address)."""
        publish_not_ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
        key = f"{_ns(service)}/{service['metadata']['name']}"
        out: dict[str, list[str]] = {}
        for sl in self.slices.by_index(BY_SERVICE, key):
            if sl.get("addressType") not in ("IPv4", "IPv6"):
                continue  # FQDN slices name no address
            for ep in sl.get("endpoints") or []:
                addresses = [a for a in ep.get("addresses") or [] if a]
                ready = (ep.get("conditions") or {}).get("ready")
                if not addresses or (ready is False and not publish_not_ready):
                    continue  # an unknown condition (None) counts as ready
                hostname = str(ep.get("hostname") or dashed(addresses[0])).lower()
                known = out.setdefault(hostname, [])
                known.extend(a for a in addresses if a not in known)
        return [Endpoint(h, tuple(a)) for h, a in out.items()]


@dataclass(frozen=True)
class Answer:
    """What to reply: rcode and sections; `chase` is a CNAME target outside the zone to resolve upstream."""

    rcode: int
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    chase: str | None = None


class Resolver:
    """Answers questions about names under the cluster domain (and reverse names of cluster addresses)."""

    def __init__(
        self,
        data: ClusterData,
        *,
        zone: str = "cluster.local",
        ttl: int = DEFAULT_TTL,
        pods: PodsMode = "insecure",
        ns_addresses: tuple[str, ...] = (),
    ) -> None:
        self.data = data
        self.zone = zone.lower().strip(".")
        self.ttl = ttl
        self.pods = pods
        self.ns_addresses = ns_addresses  # `ns.dns.<zone>`: where this server is reached, if known
        self.serial = int(time.time())  # the SOA serial: bumped by `changed()`
        self.generation = 0  # answers computed before a change are stale once this moves

    def changed(self) -> None:
        """Call on every change to the caches (informer handlers do)."""
        self.serial = max(self.serial + 1, int(time.time()))
        self.generation += 1

    # --- names -------------------------------------------------------------------------------
    def in_zone(self, qname: str) -> bool:
        name = qname.lower().rstrip(".")
        return name == self.zone or name.endswith("." + self.zone)

    def _labels(self, qname: str) -> list[str]:
        """The labels left of the zone, last first: `web.default.svc.<zone>` → ["svc", "default", "web"]."""
        name = qname.lower().rstrip(".")
        rel = name[: -len(self.zone)].rstrip(".")
        return list(reversed(rel.split("."))) if rel else []

    def _fqdn(self, *labels: str) -> str:
        return ".".join([*labels, self.zone]) + "."

    def records(self, qname: str) -> list[Rdata] | None:
        """Every record of a name in the zone; None when the name does not exist."""
        labels = self._labels(qname)
        if not labels:
            return [
                (QTYPE.SOA, self._soa_rdata()),
                (QTYPE.NS, NS(self._fqdn("ns", "dns"))),
            ]
        kind, rest = labels[0], labels[1:]
        if kind == "svc":
            return self._svc_records(rest)
        if kind == "pod":
            return self._pod_records(rest)
        if labels == ["dns-version"]:
            return [(QTYPE.TXT, TXT(SCHEMA_VERSION))]
        if labels == ["dns"]:
            return []
        if labels == ["dns", "ns"]:
            return [_addr_record(ip) for ip in self.ns_addresses]
        return None

    def _svc_records(self, labels: list[str]) -> list[Rdata] | None:
        if not labels:
            return []
        ns = labels[0]
        if len(labels) == 1:
            return [] if self.data.services.index_keys(BY_NAMESPACE, ns) else None
        service = self.data.services.get(f"{ns}/{labels[1]}")
        if service is None:
            return None
        spec = service.get("spec") or {}
        external = spec.get("type") == "ExternalName"
        rest = labels[2:]
        needs_endpoints = not external and (is_headless(service) or bool(rest))
        endpoints = self.data.ready_endpoints(service) if needs_endpoints else []
        if is_headless(service) and not endpoints:
            return None  # the specification: a headless Service without ready endpoints is NXDOMAIN
        if not rest:
            if external:
                target = str(spec.get("externalName") or "").rstrip(".")
                return [(QTYPE.CNAME, CNAME(target + "."))] if target else []
            if is_headless(service):
                return [_addr_record(ip) for ep in endpoints for ip in ep.addresses]
            return [_addr_record(ip) for ip in cluster_ips(service)]
        if rest[0].startswith("_"):
            srv = self._srv(service, endpoints, proto=rest[0][1:], port=rest[1][1:] if len(rest) > 1 else None)
            if len(rest) == 1:
                return [] if srv else None  # `_tcp.<svc>…`: an empty non-terminal
            if len(rest) > 2 or not rest[1].startswith("_"):
                return None
            return srv or None
        if len(rest) == 1 and not external:
            return [_addr_record(ip) for ep in endpoints if ep.hostname == rest[0] for ip in ep.addresses] or None
        return None

    def _srv(self, service: Obj, endpoints: list[Endpoint], *, proto: str, port: str | None) -> list[Rdata]:
        """SRV records of the named ports of `proto` (and name `port`, unless None)."""
        meta, spec = service["metadata"], service.get("spec") or {}

        def matches(p: Obj) -> bool:
            name = str(p.get("name") or "").lower()
            return bool(name) and str(p.get("protocol") or "TCP").lower() == proto and port in (None, name)

        if not is_headless(service):
            if spec.get("type") == "ExternalName":
                target = str(spec.get("externalName") or "").rstrip(".") + "."
            else:
                target = self._fqdn(meta["name"], _ns(service), "svc")
            ports = [p for p in spec.get("ports") or [] if matches(p)]
            return [(QTYPE.SRV, SRV(0, 100 // max(len(ports), 1), int(p["port"]), target)) for p in ports]
        ready = {ep.hostname for ep in endpoints}
        key = f"{_ns(service)}/{meta['name']}"
        out: dict[tuple[int, str], None] = {}
        for sl in self.data.slices.by_index(BY_SERVICE, key):
            for p in sl.get("ports") or []:
                if not matches(p) or p.get("port") is None:
                    continue
                for ep in sl.get("endpoints") or []:
                    addresses = ep.get("addresses") or []
                    hostname = str(ep.get("hostname") or (dashed(addresses[0]) if addresses else "")).lower()
                    if hostname in ready:
                        out[(int(p["port"]), self._fqdn(hostname, meta["name"], _ns(service), "svc"))] = None
        weight = 100 // max(len(out), 1)
        return [(QTYPE.SRV, SRV(0, weight, number, target)) for number, target in out]

    def _pod_records(self, labels: list[str]) -> list[Rdata] | None:
        if self.pods == "disabled":
            return None
        if len(labels) < 2:
            return [] if not labels or self.pods == "insecure" or self._pods_in(labels[0]) else None
        if len(labels) != 2:
            return None
        ip = undashed(labels[1])
        if ip is None:
            return None
        if self.pods == "verified" and not self._pod_has_ip(labels[0], ip):
            return None
        return [_addr_record(ip)]

    def _pods_in(self, ns: str) -> bool:
        pods = self.data.pods
        return pods is not None and any(v.startswith(ns + "/") for v in pods.index_values(BY_IP))

    def _pod_has_ip(self, ns: str, ip: str) -> bool:
        pods = self.data.pods
        return pods is not None and bool(pods.index_keys(BY_IP, f"{ns}/{ip}"))

    # --- reverse -----------------------------------------------------------------------------
    def reverse(self, qname: str) -> list[Rdata]:
        """PTR records for an in-addr.arpa / ip6.arpa name of a ClusterIP or headless endpoint (may be [])."""
        ip = reverse_ip(qname)
        if ip is None:
            return []
        out: list[Rdata] = []
        for svc in self.data.services.by_index(BY_IP, ip):
            out.append((QTYPE.PTR, PTR(self._fqdn(svc["metadata"]["name"], _ns(svc), "svc"))))
        seen: set[str] = set()
        for sl in self.data.slices.by_index(BY_IP, ip):
            for key in _slice_service(sl):
                service = self.data.services.get(key)
                if service is None or not is_headless(service) or key in seen:
                    continue
                seen.add(key)
                for ep in self.data.ready_endpoints(service):
                    if ip in ep.addresses:
                        name = self._fqdn(ep.hostname, service["metadata"]["name"], _ns(service), "svc")
                        out.append((QTYPE.PTR, PTR(name)))
        return out

    # --- answers -----------------------------------------------------------------------------
    def _soa_rdata(self) -> SOA:
        return SOA(self._fqdn("ns", "dns"), self._fqdn("hostmaster"), (self.serial, 7200, 1800, 86400, self.ttl))

    def soa(self) -> RR:
        return RR(self.zone + ".", QTYPE.SOA, ttl=self.ttl, rdata=self._soa_rdata())

    def resolve(self, qname: str, qtype: int, *, depth: int = 0) -> Answer:
        """The answer to `qname qtype` for a name in the zone."""
        records = self.records(qname)
        if records is None:
            return Answer(RCODE.NXDOMAIN, authority=[self.soa()])
        cnames = [r for r in records if r[0] == QTYPE.CNAME]
        if cnames and qtype not in (QTYPE.CNAME, QTYPE.ANY):
            rr = RR(qname, QTYPE.CNAME, ttl=self.ttl, rdata=cnames[0][1])
            target = str(cnames[0][1].label).rstrip(".")
            if self.in_zone(target):  # an ExternalName naming another Service: followed here (not in a loop)
                if depth >= 8:
                    return Answer(RCODE.NOERROR, [rr])
                inner = self.resolve(target, qtype, depth=depth + 1)
                return Answer(inner.rcode, [rr, *inner.answer], inner.authority, inner.additional)
            return Answer(RCODE.NOERROR, [rr], chase=target)
        chosen = [r for r in records if qtype in (r[0], QTYPE.ANY)]
        if not chosen:
            return Answer(RCODE.NOERROR, authority=[self.soa()])
        answer = [RR(qname, rtype, ttl=self.ttl, rdata=rdata) for rtype, rdata in chosen]
        additional: list[RR] = []
        for rtype, rdata in chosen:
            if rtype == QTYPE.SRV and self.in_zone(str(rdata.target)):
                target = str(rdata.target)
                for t, r in self.records(target) or []:
                    if t in (QTYPE.A, QTYPE.AAAA):
                        additional.append(RR(target, t, ttl=self.ttl, rdata=r))
        return Answer(RCODE.NOERROR, answer, additional=additional)

    def resolve_reverse(self, qname: str, qtype: int) -> Answer | None:
        """PTR answers for cluster addresses; None when the address is not the cluster's (forward it)."""
        records = self.reverse(qname)
        if not records:
            return None
        if qtype not in (QTYPE.PTR, QTYPE.ANY):
            return Answer(RCODE.NOERROR)
        return Answer(RCODE.NOERROR, [RR(qname, t, ttl=self.ttl, rdata=r) for t, r in records])


def reverse_ip(qname: str) -> str | None:
    """The address of a full in-addr.arpa or ip6.arpa name, or None."""
    name = qname.lower().rstrip(".")
    try:
        if name.endswith(".in-addr.arpa"):
            parts = name[: -len(".in-addr.arpa")].split(".")
            if len(parts) == 4:
                return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        elif name.endswith(".ip6.arpa"):
            nibbles = name[: -len(".ip6.arpa")].split(".")
            if len(nibbles) == 32 and all(len(n) == 1 for n in nibbles):
                digits = "".join(reversed(nibbles))
                return str(ipaddress.IPv6Address(int(digits, 16)))
    except ValueError:
        return None
    return None


def is_reverse(qname: str) -> bool:
    name = qname.lower().rstrip(".")
    return name.endswith(".in-addr.arpa") or name.endswith(".ip6.arpa")
