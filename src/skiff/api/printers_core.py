"""Table printers for core/v1 workload-facing kinds: Pod, Node, Namespace, Service, Endpoints, Event.

Ports of Kubernetes' pkg/printers/internalversion for the core group, so that
`kubectl get pods` shows READY "1/2", STATUS "CrashLoopBackOff" or
"Init:0/1" and RESTARTS "3 (5m ago)" computed exactly as kube-apiserver does.
See `skiff.api.printers` for the shared vocabulary.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skiff.api.humanize import parse_time, since
from skiff.api.printers import (
    AGE,
    NAME,
    NAME_DESC,
    Cell,
    Obj,
    Printer,
    age,
    as_dict,
    as_int,
    as_list,
    as_str,
    column,
    deleting,
    dig,
    format_labels,
    meta,
    name_of,
    wide,
)

RESTARTS_DESC = (
    "The number of times the containers in this pod have been restarted and when the last container in "
    "this pod has restarted."
)


def _restartable(container: Obj | None) -> bool:
    return container is not None and container.get("restartPolicy") == "Always"


def _condition_true(conditions: Any, type_: str) -> bool:
    return any(
        as_dict(c).get("type") == type_ and as_dict(c).get("status") == "True" for c in as_list(conditions)
    )


def _terminated_at(status: Obj) -> str:
    return as_str(dig(status, "lastState", "terminated", "finishedAt"))


def _later(a: str, b: str) -> str:
    """The later of two RFC 3339 timestamps (empty = unset)."""
    ta, tb = parse_time(a), parse_time(b)
    if tb is None:
        return a
    if ta is None or tb > ta:
        return b
    return a


def pod_row(pod: Obj, now: datetime) -> list[Cell]:
    """`printPod`: READY, STATUS (reason), RESTARTS "3 (5m ago)" and the wide cells."""
    spec, status = as_dict(pod.get("spec")), as_dict(pod.get("status"))
    restarts = sidecar_restarts = 0
    last_restart = last_sidecar_restart = ""
    total = len(as_list(spec.get("containers")))
    ready = 0
    phase = as_str(status.get("phase"))
    reason = as_str(status.get("reason")) or phase
    for cond in as_list(status.get("conditions")):
        if as_dict(cond).get("type") == "PodScheduled" and as_dict(cond).get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    init_specs = [as_dict(c) for c in as_list(spec.get("initContainers"))]
    init_by_name = {as_str(c.get("name")): c for c in init_specs}
    total += sum(1 for c in init_specs if _restartable(c))

    initializing = False
    for i, raw in enumerate(as_list(status.get("initContainerStatuses"))):
        cs = as_dict(raw)
        state = as_dict(cs.get("state"))
        terminated, waiting = state.get("terminated"), state.get("waiting")
        restarts += as_int(cs.get("restartCount"))
        last_restart = _later(last_restart, _terminated_at(cs))
        sidecar = _restartable(init_by_name.get(as_str(cs.get("name"))))
        if sidecar:
            sidecar_restarts += as_int(cs.get("restartCount"))
            last_sidecar_restart = _later(last_sidecar_restart, _terminated_at(cs))
        if isinstance(terminated, dict) and as_int(terminated.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started") is True:
            if cs.get("ready") is True:
                ready += 1
            continue
        if isinstance(terminated, dict):
            if not terminated.get("reason"):
                sig = as_int(terminated.get("signal"))
                reason = (
                    f"Init:Signal:{sig}" if sig else f"Init:ExitCode:{as_int(terminated.get('exitCode'))}"
                )
            else:
                reason = "Init:" + as_str(terminated.get("reason"))
        elif (
            isinstance(waiting, dict) and waiting.get("reason") and waiting.get("reason") != "PodInitializing"
        ):
            reason = "Init:" + as_str(waiting.get("reason"))
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(status.get("conditions"), "Initialized"):
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for raw in reversed(as_list(status.get("containerStatuses"))):
            cs = as_dict(raw)
            state = as_dict(cs.get("state"))
            terminated, waiting = state.get("terminated"), state.get("waiting")
            restarts += as_int(cs.get("restartCount"))
            last_restart = _later(last_restart, _terminated_at(cs))
            if isinstance(waiting, dict) and waiting.get("reason"):
                reason = as_str(waiting.get("reason"))
            elif isinstance(terminated, dict) and terminated.get("reason"):
                reason = as_str(terminated.get("reason"))
            elif isinstance(terminated, dict):
                sig = as_int(terminated.get("signal"))
                reason = f"Signal:{sig}" if sig else f"ExitCode:{as_int(terminated.get('exitCode'))}"
            elif cs.get("ready") is True and isinstance(state.get("running"), dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status.get("conditions"), "Ready") else "NotReady"

    if deleting(pod) and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting(pod) and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_cell = str(restarts)
    if restarts and last_restart:
        restarts_cell = f"{restarts} ({since(last_restart, now)} ago)"

    pod_ips = as_list(status.get("podIPs"))
    pod_ip = as_str(dig(pod_ips, 0, "ip")) if pod_ips else as_str(status.get("podIP"))
    gates = "<none>"
    if as_list(spec.get("readinessGates")):
        conds = {
            as_dict(c).get("type"): as_dict(c).get("status")
            for c in reversed(as_list(status.get("conditions")))
        }
        gate_types = [as_dict(g).get("conditionType") for g in as_list(spec.get("readinessGates"))]
        gates = f"{sum(1 for t in gate_types if conds.get(t) == 'True')}/{len(gate_types)}"
    return [
        name_of(pod),
        f"{ready}/{total}",
        reason,
        restarts_cell,
        age(pod, now),
        pod_ip or "<none>",
        as_str(spec.get("nodeName")) or "<none>",
        as_str(status.get("nominatedNodeName")) or "<none>",
        gates,
    ]


def pod_conditions(pod: Obj) -> list[dict[str, str]]:
    phase = dig(pod, "status", "phase")
    if phase == "Succeeded":
        msg = "The pod has completed successfully."
    elif phase == "Failed":
        msg = "The pod failed."
    else:
        return []
    return [{"type": "Completed", "status": "True", "reason": phase, "message": msg}]


def node_row(node: Obj, now: datetime) -> list[Cell]:
    spec, status = as_dict(node.get("spec")), as_dict(node.get("status"))
    states: list[str] = []
    ready = next(
        (as_dict(c) for c in as_list(status.get("conditions")) if as_dict(c).get("type") == "Ready"), None
    )
    if ready is not None:
        states.append("Ready" if ready.get("status") == "True" else "NotReady")
    else:
        states.append("Unknown")
    if spec.get("unschedulable") is True:
        states.append("SchedulingDisabled")
    roles: set[str] = set()
    for k, v in as_dict(meta(node).get("labels")).items():
        if k.startswith("node-role.kubernetes.io/") and len(k) > len("node-role.kubernetes.io/"):
            roles.add(k[len("node-role.kubernetes.io/") :])
        elif k == "kubernetes.io/role" and v:
            roles.add(as_str(v))
    info = as_dict(status.get("nodeInfo"))

    def address(kind: str) -> str:
        for a in as_list(status.get("addresses")):
            if as_dict(a).get("type") == kind:
                return as_str(as_dict(a).get("address"))
        return "<none>"

    return [
        name_of(node),
        ",".join(states),
        ",".join(sorted(roles)) or "<none>",
        age(node, now),
        as_str(info.get("kubeletVersion")),
        address("InternalIP"),
        address("ExternalIP"),
        as_str(info.get("osImage")) or "<unknown>",
        as_str(info.get("kernelVersion")) or "<unknown>",
        as_str(info.get("containerRuntimeVersion")) or "<unknown>",
    ]


def _lb_ingress(status: Any, wide_: bool) -> str:
    hosts = set()
    for ing in as_list(dig(status, "loadBalancer", "ingress")):
        entry = as_dict(ing)
        if entry.get("ip"):
            hosts.add(as_str(entry.get("ip")))
        elif entry.get("hostname"):
            hosts.add(as_str(entry.get("hostname")))
    text = ",".join(sorted(hosts))
    if not wide_ and len(text) > 16:
        text = text[:13] + "..."
    return text


def service_external_ip(svc: Obj, wide_: bool = True) -> str:
    spec = as_dict(svc.get("spec"))
    external = [as_str(ip) for ip in as_list(spec.get("externalIPs"))]
    svc_type = spec.get("type", "ClusterIP")
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if svc_type == "LoadBalancer":
        lb = _lb_ingress(svc.get("status"), wide_)
        if external:
            return ",".join(([*lb.split(",")] if lb else []) + external)
        return lb or "<pending>"
    if svc_type == "ExternalName":
        return as_str(spec.get("externalName"))
    return "<unknown>"


def service_row(svc: Obj, now: datetime) -> list[Cell]:
    spec = as_dict(svc.get("spec"))
    ips = as_list(spec.get("clusterIPs"))
    cluster_ip = as_str(ips[0]) if ips else as_str(spec.get("clusterIP"))
    ports = []
    for raw in as_list(spec.get("ports")):
        p = as_dict(raw)
        proto = as_str(p.get("protocol")) or "TCP"
        node_port = as_int(p.get("nodePort"))
        ports.append(
            f"{as_int(p.get('port'))}:{node_port}/{proto}"
            if node_port > 0
            else f"{as_int(p.get('port'))}/{proto}"
        )
    # kube-apiserver prints with Wide: true, so LoadBalancer addresses are never clipped here
    return [
        name_of(svc),
        as_str(spec.get("type", "ClusterIP")),
        cluster_ip or "<none>",
        service_external_ip(svc),
        ",".join(ports) or "<none>",
        age(svc, now),
        format_labels(spec.get("selector")),
    ]


def endpoints_cell(ep: Obj) -> str:
    subsets = as_list(ep.get("subsets"))
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count = 0
    for raw in subsets:
        ss = as_dict(raw)
        addrs = [as_str(as_dict(a).get("ip")) for a in as_list(ss.get("addresses"))]
        ports = as_list(ss.get("ports"))
        if not ports:
            count += len(addrs)
            shown.extend(addrs[: max(0, 3 - len(shown))])
            continue
        for port in ports:
            count += len(addrs)
            num = as_int(as_dict(port).get("port"))
            for ip in addrs[: max(0, 3 - len(shown))]:
                shown.append(f"[{ip}]:{num}" if ":" in ip else f"{ip}:{num}")
    text = ",".join(shown)
    return f"{text} + {count - 3} more..." if count > 3 else text


def event_row(ev: Obj, now: datetime, *, v1: bool = False) -> list[Cell]:
    """`printEvent` for core/v1 Events and (with `v1`) their events.k8s.io/v1 form."""
    if v1:
        regarding, message = as_dict(ev.get("regarding")), as_str(ev.get("note"))
        first_ts, last_ts = ev.get("deprecatedFirstTimestamp"), ev.get("deprecatedLastTimestamp")
        count, source = as_int(ev.get("deprecatedCount")), as_dict(ev.get("deprecatedSource"))
    else:
        regarding, message = as_dict(ev.get("involvedObject")), as_str(ev.get("message"))
        first_ts, last_ts = ev.get("firstTimestamp"), ev.get("lastTimestamp")
        count, source = as_int(ev.get("count")), as_dict(ev.get("source"))
    first = since(first_ts, now)
    if first == "<unknown>":
        first = since(ev.get("eventTime"), now)
    last = since(last_ts, now)
    if last == "<unknown>":
        last = first
    series = ev.get("series")
    if isinstance(series, dict):
        last = since(series.get("lastObservedTime"), now)
        count = as_int(series.get("count"))
    elif count == 0:
        count = 1
    kind, obj_name = as_str(regarding.get("kind")).lower(), as_str(regarding.get("name"))
    target = f"{kind}/{obj_name}" if obj_name else kind
    component = as_str(source.get("component")) or as_str(ev.get("reportingController"))
    host = as_str(source.get("host")) or as_str(ev.get("reportingInstance"))
    return [
        last,
        as_str(ev.get("type")),
        as_str(ev.get("reason")),
        target,
        as_str(regarding.get("fieldPath")),
        f"{component}, {host}" if host else component,
        message.strip(),
        first,
        count,
        name_of(ev),
    ]


def _namespace_row(ns: Obj, now: datetime) -> list[Cell]:
    return [name_of(ns), as_str(dig(ns, "status", "phase")), age(ns, now)]


def _endpoints_row(ep: Obj, now: datetime) -> list[Cell]:
    return [name_of(ep), endpoints_cell(ep), age(ep, now)]


POD_COLUMNS = (
    NAME,
    column("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
    column("Status", desc="The aggregate status of the containers in this pod."),
    column("Restarts", desc=RESTARTS_DESC),
    AGE,
    wide("IP", "podIP address allocated to the pod. Routable at least within the cluster."),
    wide("Node", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on the node."),
    wide("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness."),
)
NODE_COLUMNS = (
    NAME,
    column("Status", desc="The status of the node"),
    column("Roles", desc="The roles of the node"),
    AGE,
    column("Version", desc="Kubelet Version reported by the node."),
    wide("Internal-IP", "List of addresses reachable to the node."),
    wide("External-IP", "List of addresses reachable to the node."),
    wide("OS-Image", "OS Image reported by the node from /etc/os-release."),
    wide("Kernel-Version", "Kernel Version reported by the node from 'uname -r'."),
    wide("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote API."),
)
SERVICE_COLUMNS = (
    NAME,
    column("Type", desc="type determines how the Service is exposed."),
    column("Cluster-IP", desc="clusterIP is the IP address of the service."),
    column("External-IP", desc="externalIPs is a list of IP addresses on which nodes accept this service."),
    column("Port(s)", desc="The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "Route service traffic to pods with label keys and values matching this selector."),
)
EVENT_COLUMNS = (
    column("Last Seen", desc="The time at which the most recent occurrence of this event was recorded."),
    column("Type", desc="Type of this event (Normal, Warning), new types could be added in the future"),
    column("Reason", desc="A short, machine understandable string for the object's current status."),
    column("Object", desc="The object that this event is about."),
    wide("Subobject", "A JSON/Go field access statement for a piece of the object, if not all of it."),
    wide("Source", "The component reporting this event."),
    column("Message", desc="A human-readable description of the status of this operation."),
    wide("First Seen", "The time at which the event was first recorded."),
    wide("Count", "The number of times this event has occurred."),
    column("Name", desc=NAME_DESC, fmt="name", priority=1),
)
CORE: dict[tuple[str, str], Printer] = {
    ("", "Pod"): Printer(POD_COLUMNS, pod_row, pod_conditions),
    ("", "Node"): Printer(NODE_COLUMNS, node_row),
    ("", "Namespace"): Printer(
        (NAME, column("Status", desc="The status of the namespace"), AGE), _namespace_row
    ),
    ("", "Service"): Printer(SERVICE_COLUMNS, service_row),
    ("", "Endpoints"): Printer(
        (NAME, column("Endpoints", desc="The set of all endpoints is the union of all subsets."), AGE),
        _endpoints_row,
    ),
    ("", "Event"): Printer(EVENT_COLUMNS, event_row),
}
