"""What the Endpoints and EndpointSlice controllers agree on: which pods back a Service, on which ports.

Both controllers turn "the pods a Service selects" into addresses, and must
answer the same questions the same way (Kubernetes keeps these answers in
`pkg/controller/util/endpoint` and `k8s.io/endpointslice/util`): does a pod
belong in endpoints at all (it has an IP, is not finished, is not being
deleted unless terminating pods are wanted), is it ready, which port does a
named `targetPort` resolve to in this pod, which Services does a changed pod
concern (so that a pod event enqueues exactly those Services).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skiff.api import errors
from skiff.client import Informer
from skiff.client.cache import IndexFunc, index_by_namespace

Obj = dict[str, Any]
NAMESPACE_INDEX = "namespace"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_HEADLESS = "service.kubernetes.io/headless"


def ensure_index(informer: Informer, name: str, fn: IndexFunc) -> None:
    """Add an index to a shared informer unless another controller already added it under that name."""
    try:
        informer.add_index(name, fn)
    except ValueError:
        pass


def namespace_terminating(exc: errors.StatusError) -> bool:
    """A create refused because its namespace is going away: Kubernetes' controllers drop the work."""
    if not isinstance(exc, errors.Forbidden):
        return False
    reasons = {c.get("reason") for c in exc.causes}
    return "NamespaceTerminating" in reasons or "because it is being terminated" in str(exc)


def selector_of(service: Obj) -> dict[str, str] | None:
    """The Service's pod selector; None when it has none (its endpoints are someone else's business)."""
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return None
    return {str(k): str(v) for k, v in selector.items()}


def selects(selector: dict[str, str], pod: Obj) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def is_headless(service: Obj) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def is_pod_ready(pod: Obj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_ips(pod: Obj) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(p["ip"]) for p in status.get("podIPs") or [] if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return ips


def should_pod_be_in_endpoints(pod: Obj, *, include_terminating: bool) -> bool:
    """Kubernetes' ShouldPodBeInEndpoints: not finished, has an IP, and not terminating unless asked."""
    if is_terminal(pod) or not pod_ips(pod):
        return False
    return include_terminating or not (pod.get("metadata") or {}).get("deletionTimestamp")


def should_set_hostname(pod: Obj, service: Obj) -> bool:
    """A pod's hostname is published when its subdomain names the (headless) Service."""
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == service["metadata"]["name"]


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """The pod's port for a Service port: a number as is, a name looked up in the containers' ports."""
    target = service_port.get("targetPort")
    if target is None or target == "":
        target = service_port.get("port")
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def endpoint_port(service_port: Obj, number: int) -> Obj:
    """The port of an Endpoints subset / EndpointSlice for a resolved Service port."""
    port: Obj = {"name": service_port.get("name", ""), "port": number, "protocol": service_port.get("protocol", "TCP")}
    if service_port.get("appProtocol"):
        port["appProtocol"] = service_port["appProtocol"]
    return port


def ip_family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def services_for_pod(services: Informer, pod: Obj) -> list[str]:
    """Keys of the Services in the pod's namespace whose selector matches the pod."""
    ns = (pod.get("metadata") or {}).get("namespace") or ""
    keys = []
    for svc in services.by_index(NAMESPACE_INDEX, ns):
        selector = selector_of(svc)
        if selector is not None and selects(selector, pod):
            keys.append(f"{ns}/{svc['metadata']['name']}")
    return keys


def pod_endpoint_relevant(pod: Obj) -> tuple[Any, ...]:
    """What of a pod endpoints depend on: a pod update that changes none of this concerns no Service."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    ports = [c.get("ports") for c in spec.get("containers") or []]
    return (
        tuple(sorted((meta.get("labels") or {}).items())),
        bool(meta.get("deletionTimestamp")),
        tuple(pod_ips(pod)),
        is_pod_ready(pod),
        is_terminal(pod),
        spec.get("nodeName"),
        spec.get("hostname"),
        spec.get("subdomain"),
        repr(ports),
    )


def add_pod_handlers(pods: Informer, services: Informer, enqueue: Callable[[str], None]) -> None:
    """Enqueue the Services a pod concerns (before and after a change) whenever it changes in a way that matters."""
    ensure_index(services, NAMESPACE_INDEX, index_by_namespace)

    def on_add(pod: Obj) -> None:
        for key in services_for_pod(services, pod):
            enqueue(key)

    def on_update(old: Obj, new: Obj) -> None:
        if old is not new and pod_endpoint_relevant(old) == pod_endpoint_relevant(new):
            return
        for key in set(services_for_pod(services, old)) | set(services_for_pod(services, new)):
            enqueue(key)

    pods.add_handlers(on_add=on_add, on_update=on_update, on_delete=on_add)
