"""The `kube-system/kube-dns` Service in front of the cluster DNS server, as kubeadm and k3s name it.

Pods get the Service's fixed ClusterIP (10.43.0.10) as their nameserver; the proxy on every node
forwards it to wherever the DNS server listens. The server is no pod, so the Service has no
selector: its Endpoints and EndpointSlice are written here, naming the address and port the
server listens on, as the apiserver writes those of the `kubernetes` Service. The Endpoints are
marked `endpointslice.kubernetes.io/skip-mirror` since the slice is written alongside.
Ports are Kubernetes' `dns` (53/UDP) and `dns-tcp` (53/TCP).
"""

from __future__ import annotations

import logging
from typing import Any

from skiff.api import errors
from skiff.client import Client, Resource, resources

log = logging.getLogger(__name__)
Obj = dict[str, Any]

NAMESPACE = "kube-system"
NAME = "kube-dns"
MANAGER = "skiff-dns"
LABELS = {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "skiff-dns"}
PORTS = (("dns", "UDP"), ("dns-tcp", "TCP"))


def service(cluster_ip: str) -> Obj:
    ports = [{"name": n, "port": 53, "protocol": p, "targetPort": 53} for n, p in PORTS]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports}}  # fmt: skip


def endpoints(address: str, port: int) -> Obj:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {**LABELS, "endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": address}],
                         "ports": [{"name": n, "port": port, "protocol": p} for n, p in PORTS]}]}  # fmt: skip


def endpoint_slice(address: str, port: int) -> Obj:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{NAME}-{MANAGER}", "namespace": NAMESPACE,
                         "labels": {**LABELS, "kubernetes.io/service-name": NAME,
                                    "endpointslice.kubernetes.io/managed-by": MANAGER}},
            "addressType": "IPv6" if ":" in address else "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True, "serving": True,
                                                                  "terminating": False}}],
            "ports": [{"name": n, "port": port, "protocol": p} for n, p in PORTS]}  # fmt: skip


async def _put(client: Client, resource: Resource, body: Obj) -> None:
    """Create `body`, or replace the existing object with it (keeping its resourceVersion)."""
    name = body["metadata"]["name"]
    try:
        current = await client.get(resource, name, namespace=NAMESPACE)
    except errors.NotFound:
        try:
            await client.create(resource, body)
            return
        except errors.AlreadyExists:
            current = await client.get(resource, name, namespace=NAMESPACE)
    body = {**body, "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
    await client.update(resource, body)


async def register_dns_service(client: Client, *, cluster_ip: str, address: str, port: int) -> None:
    """Make kube-system/kube-dns (ClusterIP `cluster_ip`) lead to `address`:`port`."""
    wanted = service(cluster_ip)
    try:
        current = await client.get(resources.SERVICES, NAME, namespace=NAMESPACE)
    except errors.NotFound:
        current = None
    if current is None:
        try:
            await client.create(resources.SERVICES, wanted)
        except errors.AlreadyExists:
            pass
    elif (current.get("spec") or {}).get("clusterIP") != cluster_ip:
        log.error("%s/%s has clusterIP %s, not %s: pods whose nameserver is %s get no answer; delete the "
                  "Service to have it made again", NAMESPACE, NAME, current["spec"].get("clusterIP"), cluster_ip,
                  cluster_ip)  # fmt: skip
    else:
        patch = {"metadata": {"labels": LABELS}, "spec": {"ports": wanted["spec"]["ports"], "selector": None}}
        await client.patch(resources.SERVICES, NAME, patch, namespace=NAMESPACE)
    await _put(client, resources.ENDPOINTS, endpoints(address, port))
    await _put(client, resources.ENDPOINTSLICES, endpoint_slice(address, port))
    log.info("%s/%s: %s -> %s:%d", NAMESPACE, NAME, cluster_ip, address, port)
