"""What the proxy programs, read out of Services and EndpointSlices: one `ServicePort` per service port.

kube-proxy's `ServiceChangeTracker` and `EndpointsChangeTracker` boiled down
to one pure function. The API objects stay plain dicts (as everywhere in
skiff); this module turns them into small frozen values the rule generator
and the syncer compare and hash:

- Services of type ClusterIP, NodePort and LoadBalancer with an IPv4 cluster
  IP; headless (`clusterIP: None`), not yet allocated and ExternalName
  Services are skipped, as are Services labelled
  `service.kubernetes.io/service-proxy-name` (meant for another proxy).
- EndpointSlices (discovery.k8s.io/v1) belong to the Service named by their
  `kubernetes.io/service-name` label; only IPv4 slices, only `ready`
  endpoints (a missing condition counts as ready, as the API documents),
  the first address of each endpoint.
- A slice port serves the service port of the same name and protocol; a
  service port whose name no slice carries has no endpoints (its traffic is
  rejected, never sent to a wrong port).
- External IPs: `spec.externalIPs` and, for type LoadBalancer, the ingress
  IPs in its status (served like external IPs; no loadBalancerSourceRanges).
- `internalTrafficPolicy: Local` and `externalTrafficPolicy: Local` are kept
  with each port, and endpoints on the proxy's own node marked `local`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, Kubernetes' default for sessionAffinity: ClientIP


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int
    local: bool = False  # on this proxy's node (its `nodeName`)

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with the ready endpoints that serve it."""

    namespace: str
    name: str
    port_name: str  # "" for an unnamed port
    protocol: str  # TCP, UDP or SCTP
    cluster_ip: str
    port: int
    node_port: int | None = None
    external_ips: tuple[str, ...] = ()  # spec.externalIPs and a LoadBalancer's ingress IPs (IPv4)
    affinity_timeout: int | None = None  # seconds, when sessionAffinity is ClientIP
    endpoints: tuple[Endpoint, ...] = field(default=())
    internal_local: bool = False  # internalTrafficPolicy: Local (cluster IP traffic to this node's endpoints)
    external_local: bool = False  # externalTrafficPolicy: Local (node port traffic to this node's endpoints)

    @property
    def local_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.local)

    @property
    def name_string(self) -> str:
        """`namespace/name:port` as kube-proxy's ServicePortName prints it (`namespace/name` for an unnamed port)."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base


def _is_ipv4(value: object) -> bool:
    try:
        return isinstance(ipaddress.ip_address(str(value)), ipaddress.IPv4Address)
    except ValueError:
        return False


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def proxied_cluster_ip(service: Obj) -> str | None:
    """The IPv4 cluster IP the proxy serves for `service`, or None when it serves none."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName" or PROXY_NAME_LABEL in _labels(service):
        return None
    candidates = [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]
    for ip in candidates:
        if ip and ip != "None" and _is_ipv4(ip):
            return str(ip)
    return None


def _ready(endpoint: Obj) -> bool:
    ready = (endpoint.get("conditions") or {}).get("ready")
    return ready is None or bool(ready)


def slice_endpoints(
    slices: Iterable[Obj], port_name: str, protocol: str, node_name: str | None = None
) -> tuple[Endpoint, ...]:
    """The ready endpoints of `slices` for the service port called `port_name`/`protocol`, sorted."""
    found: set[Endpoint] = set()
    for eps in slices:
        if eps.get("addressType", "IPv4") != "IPv4":
            continue
        numbers = [
            int(p["port"])
            for p in eps.get("ports") or []
            if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol and p.get("port")
        ]
        if not numbers:
            continue
        for endpoint in eps.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses or not _ready(endpoint) or not _is_ipv4(addresses[0]):
                continue
            local = node_name is not None and endpoint.get("nodeName") == node_name
            found.update(Endpoint(str(addresses[0]), n, local) for n in numbers)
    return tuple(sorted(found, key=lambda e: (ipaddress.ip_address(e.ip), e.port)))


def service_ports(services: Iterable[Obj], slices: Iterable[Obj], node_name: str | None = None) -> list[ServicePort]:
    """Every proxied port of `services` with its endpoints from `slices`, in a stable order.

    Endpoints whose `nodeName` is `node_name` are marked local (for the Local traffic policies).
    """
    by_service: dict[tuple[str, str], list[Obj]] = {}
    for eps in slices:
        owner = _labels(eps).get(SERVICE_NAME_LABEL)
        if owner and PROXY_NAME_LABEL not in _labels(eps):
            ns = str((eps.get("metadata") or {}).get("namespace") or "default")
            by_service.setdefault((ns, owner), []).append(eps)
    out: list[ServicePort] = []
    for service in services:
        cluster_ip = proxied_cluster_ip(service)
        if cluster_ip is None:
            continue
        meta = service.get("metadata") or {}
        ns, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        spec = service.get("spec") or {}
        affinity: int | None = None
        if spec.get("sessionAffinity") == "ClientIP":
            config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
            affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
        with_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
        ingress = (service.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        lb_ips = [i.get("ip") for i in ingress] if spec.get("type") == "LoadBalancer" else []
        external_ips = tuple(
            dict.fromkeys(str(ip) for ip in [*(spec.get("externalIPs") or []), *lb_ips] if _is_ipv4(ip))
        )
        own_slices = by_service.get((ns, name), [])
        for sp in spec.get("ports") or []:
            port_name, protocol = str(sp.get("name") or ""), str(sp.get("protocol") or "TCP")
            node_port = sp.get("nodePort") if with_node_ports else None
            out.append(
                ServicePort(
                    namespace=ns,
                    name=name,
                    port_name=port_name,
                    protocol=protocol,
                    cluster_ip=cluster_ip,
                    port=int(sp["port"]),
                    node_port=int(node_port) if node_port else None,
                    affinity_timeout=affinity,
                    endpoints=slice_endpoints(own_slices, port_name, protocol, node_name),
                    internal_local=spec.get("internalTrafficPolicy") == "Local",
                    external_ips=external_ips,
                    external_local=(with_node_ports or bool(external_ips))
                    and spec.get("externalTrafficPolicy") == "Local",
                )
            )
    out.sort(key=lambda p: (p.namespace, p.name, p.port_name, p.protocol))
    return out
