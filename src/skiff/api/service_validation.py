"""Service validation with Kubernetes' rules and messages (`pkg/apis/core/validation`).

`validate_service` is ValidateService less the metadata rules every kind
shares: ports (numbers, names, protocols, targetPort as a number or an
IANA port name, duplicates), the type and what each type allows (headless
NodePort/LoadBalancer, ExternalName's name and its lack of cluster IPs,
nodePort on ClusterIP), cluster IPs and IP families, session affinity,
traffic policies, external IPs. `validate_service_update` adds what may
not change (ValidateServiceUpdate). The allocator (`apiserver.service_alloc`)
checks what needs the cluster's configuration: ranges, free values,
configured families.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from skiff.api import validation
from skiff.api.validation import FieldErrors, forbidden, invalid, not_supported, required

Obj = dict[str, Any]

SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]
AFFINITIES = ["ClientIP", "None"]
TRAFFIC_POLICIES = ["Cluster", "Local"]
IP_FAMILIES = ["IPv4", "IPv6"]
IP_FAMILY_POLICIES = ["PreferDualStack", "RequireDualStack", "SingleStack"]
MAX_CLIENT_IP_AFFINITY_SECONDS = 86400
PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"
IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
NONE = "None"

_DNS1035_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_RE = re.compile(_DNS1035_FMT)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
    "start with an alphabetic character, and end with an alphanumeric character"
)
_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")
_ONE_LETTER = re.compile(r"[a-z]")


def render_list(values: list[Any]) -> str:
    """A list value as current Kubernetes prints it in field errors: `["10.43.0.5"]`."""
    return json.dumps(values, separators=(",", ":"))


def invalid_list(path: str, values: list[Any], detail: str) -> tuple[str, str, str]:
    return ("FieldValueInvalid", path, f"Invalid value: {render_list(values)}: {detail}")


def duplicate(path: str, value: Any) -> tuple[str, str, str]:
    return ("FieldValueDuplicate", path, f"Duplicate value: {validation.render_value(value)}")


def is_dns1035_label(value: str) -> list[str]:
    """IsDNS1035Label: the rule for Service names (ValidateServiceName)."""
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_RE.fullmatch(value):
        errs.append(validation.regex_error(_DNS1035_MSG, _DNS1035_FMT, "my-name", "abc-123"))
    return errs


def is_valid_port_name(name: str) -> list[str]:
    """IsValidPortName: an IANA_SVC_NAME."""
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not _PORT_NAME_CHARS.match(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _ONE_LETTER.search(name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and (name[0] == "-" or name[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def valid_port_num(port: Any) -> bool:
    return isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535


def is_headless(spec: Obj) -> bool:
    return spec.get("clusterIP") == NONE


def externally_accessible(spec: Obj) -> bool:
    kind = spec.get("type")
    return kind in ("LoadBalancer", "NodePort") or (kind == "ClusterIP" and bool(spec.get("externalIPs")))


def _port_errors(i: int, port: Obj, require_name: bool, names: set[str]) -> FieldErrors:
    path = f"spec.ports[{i}]"
    errs: FieldErrors = []
    name = port.get("name") or ""
    if require_name and not name:
        errs.append(required(f"{path}.name"))
    elif name:
        errs.extend(invalid(f"{path}.name", name, msg) for msg in validation.is_dns1123_label(name))
        if name in names:
            errs.append(duplicate(f"{path}.name", name))
        names.add(name)
    if not valid_port_num(port.get("port")):
        errs.append(invalid(f"{path}.port", port.get("port", 0), PORT_RANGE_MSG))
    protocol = port.get("protocol") or ""
    if not protocol:
        errs.append(required(f"{path}.protocol"))
    elif protocol not in PROTOCOLS:
        errs.append(not_supported(f"{path}.protocol", protocol, PROTOCOLS))
    target = port.get("targetPort")
    if isinstance(target, str):
        errs.extend(invalid(f"{path}.targetPort", target, msg) for msg in is_valid_port_name(target))
    elif target is not None and not valid_port_num(target):
        errs.append(invalid(f"{path}.targetPort", target, PORT_RANGE_MSG))
    node_port = port.get("nodePort")
    if node_port not in (None, 0) and not valid_port_num(node_port):
        errs.append(invalid(f"{path}.nodePort", node_port, PORT_RANGE_MSG))
    return errs


def _ports_errors(spec: Obj) -> FieldErrors:
    errs: FieldErrors = []
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    kind = spec.get("type")
    if not ports and not is_headless(spec) and kind != "ExternalName":
        errs.append(required("spec.ports"))
    names: set[str] = set()
    seen_ports: set[tuple[Any, Any]] = set()
    seen_node_ports: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        errs.extend(_port_errors(i, port, len(ports) > 1, names))
        node_port = port.get("nodePort") or 0
        if kind == "ClusterIP" and node_port:
            errs.append(forbidden(f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'"))
        if node_port:
            key = (port.get("protocol"), node_port)
            if key in seen_node_ports:
                errs.append(duplicate(f"spec.ports[{i}].nodePort", node_port))
            seen_node_ports.add(key)
        pkey = (port.get("protocol"), port.get("port"))
        if pkey in seen_ports:
            errs.append(
                (
                    "FieldValueDuplicate",
                    f"spec.ports[{i}]",
                    "Duplicate value: "
                    + json.dumps({"port": port.get("port"), "protocol": port.get("protocol")}, separators=(",", ":")),
                )
            )
        seen_ports.add(pkey)
    return errs


def _type_errors(spec: Obj) -> FieldErrors:
    errs: FieldErrors = []
    kind = spec.get("type")
    if not kind:
        errs.append(required("spec.type"))
    elif kind not in SERVICE_TYPES:
        errs.append(not_supported("spec.type", kind, SERVICE_TYPES))
    if kind in ("NodePort", "LoadBalancer") and is_headless(spec):
        errs.append(invalid("spec.clusterIPs[0]", NONE, f"may not be set to 'None' for {kind} services"))
    if kind == "LoadBalancer":
        if spec.get("allocateLoadBalancerNodePorts") is None:
            errs.append(required("spec.allocateLoadBalancerNodePorts"))
    else:
        if spec.get("allocateLoadBalancerNodePorts") is not None:
            errs.append(
                forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'")
            )
        for key in ("loadBalancerSourceRanges", "loadBalancerIP", "loadBalancerClass"):
            if spec.get(key):
                errs.append(forbidden(f"spec.{key}", "may only be used when `type` is 'LoadBalancer'"))
    if kind == "ExternalName":
        if spec.get("clusterIPs"):
            errs.append(forbidden("spec.clusterIPs", "may not be set for ExternalName services"))
        if spec.get("ipFamilies"):
            errs.append(forbidden("spec.ipFamilies", "may not be set for ExternalName services"))
        if spec.get("ipFamilyPolicy") is not None:
            errs.append(forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"))
        cname = str(spec.get("externalName") or "").removesuffix(".")
        if cname:
            errs.extend(invalid("spec.externalName", cname, m) for m in validation.is_dns1123_subdomain(cname))
        else:
            errs.append(required("spec.externalName"))
    return errs


def _cluster_ip_errors(spec: Obj) -> FieldErrors:
    """ValidateServiceClusterIPsRelatedFields, single cluster: formats and consistency."""
    if spec.get("type") == "ExternalName":
        return []
    errs: FieldErrors = []
    cluster_ip = spec.get("clusterIP") or ""
    ips = [str(ip) for ip in spec.get("clusterIPs") or []]
    if cluster_ip:
        if not ips:
            errs.append(required("spec.clusterIPs"))
        elif ips[0] != cluster_ip:
            errs.append(invalid_list("spec.clusterIPs", ips, "first value must match `clusterIP`"))
    elif ips:
        errs.append(invalid_list("spec.clusterIPs", ips, "must be empty when `clusterIP` is not specified"))
    families = spec.get("ipFamilies") or []
    seen: set[str] = set()
    for i, family in enumerate(families):
        if family not in IP_FAMILIES:
            errs.append(not_supported(f"spec.ipFamilies[{i}]", family, IP_FAMILIES))
        if family in seen:
            errs.append(duplicate(f"spec.ipFamilies[{i}]", family))
        seen.add(family)
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in IP_FAMILY_POLICIES:
        errs.append(not_supported("spec.ipFamilyPolicy", policy, IP_FAMILY_POLICIES))
    for i, ip in enumerate(ips):
        if i == 0 and ip == NONE:
            if len(ips) > 1:
                errs.append(invalid_list("spec.clusterIPs", ips, "'None' must be the first and only value"))
            continue
        if not _is_ip(ip):
            errs.append(invalid(f"spec.clusterIPs[{i}]", ip, IP_MSG))
    if len(ips) > 2:
        errs.append(invalid_list("spec.clusterIPs", ips, "may only hold up to 2 values"))
    if len(ips) == 2 and all(_is_ip(ip) for ip in ips):
        if ipaddress.ip_address(ips[0]).version == ipaddress.ip_address(ips[1]).version:
            errs.append(invalid_list("spec.clusterIPs", ips, "may specify no more than one IP for each IP family"))
    if families and ips and ips[0] != NONE:
        for i, ip in enumerate(ips[: len(families)]):
            if not _is_ip(ip):
                continue
            v6 = ipaddress.ip_address(ip).version == 6
            if families[i] == "IPv4" and v6:
                errs.append(
                    invalid(f"spec.clusterIPs[{i}]", ip, f"expected an IPv4 value as indicated by `ipFamilies[{i}]`")
                )
            if families[i] == "IPv6" and not v6:
                errs.append(
                    invalid(f"spec.clusterIPs[{i}]", ip, f"expected an IPv6 value as indicated by `ipFamilies[{i}]`")
                )
    return errs


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _special_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """validateNonSpecialIP: addresses no Service may claim."""
    if ip.is_unspecified:
        return "may not be unspecified (0.0.0.0)" if ip.version == 4 else "may not be unspecified (::)"
    if ip.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if ip.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    if ip in ipaddress.ip_network("224.0.0.0/24") or ip in ipaddress.ip_network("ff02::/10"):
        return "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return None


def _policy_errors(spec: Obj) -> FieldErrors:
    errs: FieldErrors = []
    affinity = spec.get("sessionAffinity") or ""
    if not affinity:
        errs.append(required("spec.sessionAffinity"))
    elif affinity not in AFFINITIES:
        errs.append(not_supported("spec.sessionAffinity", affinity, AFFINITIES))
    config = spec.get("sessionAffinityConfig")
    if affinity == "ClientIP":
        client_ip = (config or {}).get("clientIP") if isinstance(config, dict) else None
        why = "when session affinity type is ClientIP"
        if not isinstance(config, dict):
            errs.append(required("spec.sessionAffinityConfig", why))
        elif not isinstance(client_ip, dict):
            errs.append(required("spec.sessionAffinityConfig.clientIP", why))
        elif client_ip.get("timeoutSeconds") is None:
            errs.append(required("spec.sessionAffinityConfig.clientIP.timeoutSeconds", why))
        elif not 0 < client_ip["timeoutSeconds"] <= MAX_CLIENT_IP_AFFINITY_SECONDS:
            errs.append(
                invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    client_ip["timeoutSeconds"],
                    f"must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}",
                )
            )
    elif affinity == "None" and config is not None:
        errs.append(forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"))
    external = spec.get("externalTrafficPolicy") or ""
    if not externally_accessible(spec):
        if external:
            errs.append(
                invalid("spec.externalTrafficPolicy", external, "may only be set for externally-accessible services")
            )
    elif not external:
        errs.append(required("spec.externalTrafficPolicy"))
    elif external not in TRAFFIC_POLICIES:
        errs.append(not_supported("spec.externalTrafficPolicy", external, TRAFFIC_POLICIES))
    health = spec.get("healthCheckNodePort") or 0
    if health and not (spec.get("type") == "LoadBalancer" and external == "Local"):
        errs.append(
            invalid(
                "spec.healthCheckNodePort",
                health,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            )
        )
    internal = spec.get("internalTrafficPolicy")
    if internal is None:
        if spec.get("type") in ("ClusterIP", "NodePort", "LoadBalancer"):
            errs.append(required("spec.internalTrafficPolicy"))
    elif internal not in TRAFFIC_POLICIES:
        errs.append(not_supported("spec.internalTrafficPolicy", internal, TRAFFIC_POLICIES))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        path = f"spec.externalIPs[{i}]"
        if not isinstance(ip, str) or not _is_ip(ip):
            errs.append(invalid(path, ip, IP_MSG))
        elif (why_not := _special_ip(ipaddress.ip_address(ip))) is not None:
            errs.append(invalid(path, ip, why_not))
    return errs


def validate_service(svc: Obj) -> FieldErrors:
    spec = svc.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    errs = _ports_errors(spec)
    errs.extend(_type_errors(spec))
    selector = spec.get("selector")
    if selector:
        errs.extend(validation.validate_labels(selector, "spec.selector"))
    errs.extend(_cluster_ip_errors(spec))
    errs.extend(_policy_errors(spec))
    return errs


def validate_service_update(new: Obj, old: Obj) -> FieldErrors:
    """ValidateServiceUpdate: cluster IPs and IP families never change but to or from ExternalName."""
    spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    errs: FieldErrors = []
    if "ExternalName" not in (spec.get("type"), old_spec.get("type")) and not (
        is_headless(spec) and is_headless(old_spec)
    ):
        new_ips, old_ips = list(spec.get("clusterIPs") or []), list(old_spec.get("clusterIPs") or [])
        if old_ips and not new_ips:
            errs.append(required("spec.clusterIPs[0]", "primary clusterIP can not be unset"))
        for i, ip in enumerate(old_ips[: len(new_ips)]):
            if new_ips[i] != ip:
                errs.append(invalid_list(f"spec.clusterIPs[{i}]", new_ips, "may not change once set"))
        new_families, old_families = list(spec.get("ipFamilies") or []), list(old_spec.get("ipFamilies") or [])
        for i, family in enumerate(old_families):
            if i < len(new_families) and new_families[i] != family:
                errs.append(invalid(f"spec.ipFamilies[{i}]", new_families[i], "may not change once set"))
    return errs + validate_service(new)
