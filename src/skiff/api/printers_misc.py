"""Table printers for the remaining built-in groups: rbac, coordination, discovery, networking, ….

Ports of Kubernetes' pkg/printers/internalversion for RoleBinding (ROLE,
wide USERS/GROUPS/SERVICEACCOUNTS), Lease (HOLDER), EndpointSlice (PORTS,
ENDPOINTS "+ N more..."), Ingress, PodDisruptionBudget, StorageClass and a few
more. Role, ClusterRole, LimitRange and CustomResourceDefinition have no
printer in Kubernetes either: they get the default NAME / CREATED AT table.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from skiff.api.csr import condition_summary
from skiff.api.humanize import human_duration
from skiff.api.printers import (
    AGE,
    NAME,
    Cell,
    Obj,
    Printer,
    age,
    as_dict,
    as_int,
    as_list,
    as_str,
    column,
    dig,
    format_label_selector,
    list_with_more,
    meta,
    name_of,
    wide,
)

# --- coordination, discovery, rbac ----------------------------------------------------------------------


def endpoint_slice_row(es: Obj, now: datetime) -> list[Cell]:
    ports: list[str] = []
    for raw in as_list(es.get("ports")):
        p = as_dict(raw)
        if p.get("port") is not None:
            ports.append(str(as_int(p["port"])))
        elif p.get("name") is not None:
            ports.append(as_str(p["name"]))
        else:
            ports.append("*")
    addresses = [
        as_str(a) for e in as_list(es.get("endpoints")) for a in as_list(as_dict(e).get("addresses"))
    ]
    return [
        name_of(es),
        as_str(es.get("addressType")),
        list_with_more(ports, len(ports)),
        list_with_more(addresses, len(addresses)),
        age(es, now),
    ]


def role_binding_row(rb: Obj, now: datetime) -> list[Cell]:
    ref = as_dict(rb.get("roleRef"))
    users: list[str] = []
    groups: list[str] = []
    sas: list[str] = []
    for raw in as_list(rb.get("subjects")):
        s = as_dict(raw)
        kind, name = s.get("kind"), as_str(s.get("name"))
        if kind == "ServiceAccount":
            sas.append(f"{as_str(s.get('namespace'))}/{name}")
        elif kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
    return [
        name_of(rb),
        f"{as_str(ref.get('kind'))}/{as_str(ref.get('name'))}",
        age(rb, now),
        ", ".join(users),
        ", ".join(groups),
        ", ".join(sas),
    ]


# --- networking, policy, scheduling, storage, admission, node -------------------------------------------


def ingress_row(ing: Obj, now: datetime) -> list[Cell]:
    spec = as_dict(ing.get("spec"))
    rules = as_list(spec.get("rules"))
    hosts: list[str] = []
    more = False
    for rule in rules:
        if len(hosts) == 3:
            more = True
        if not more and as_dict(rule).get("host"):
            hosts.append(as_str(as_dict(rule).get("host")))
    hosts_cell = ",".join(hosts) or "*"
    if hosts and more:
        hosts_cell += f" + {len(rules) - 3} more..."
    addresses = {
        as_str(as_dict(i).get("ip")) or as_str(as_dict(i).get("hostname"))
        for i in as_list(dig(ing, "status", "loadBalancer", "ingress"))
    } - {""}
    return [
        name_of(ing),
        as_str(spec.get("ingressClassName")) or "<none>",
        hosts_cell,
        ",".join(sorted(addresses)),
        "80, 443" if as_list(spec.get("tls")) else "80",
        age(ing, now),
    ]


def ingress_class_row(ic: Obj, now: datetime) -> list[Cell]:
    params = dig(ic, "spec", "parameters")
    cell = "<none>"
    if isinstance(params, dict):
        cell = as_str(params.get("kind"))
        if params.get("apiGroup") is not None:
            cell += "." + as_str(params.get("apiGroup"))
        cell += "/" + as_str(params.get("name"))
    return [
        name_of(ic),
        as_str(dig(ic, "spec", "controller")),
        cell,
        age(ic, now),
    ]


def _int_or_string(value: Any) -> str:
    return "N/A" if value is None else str(value)


def storage_class_row(sc: Obj, now: datetime) -> list[Cell]:
    annotations = as_dict(meta(sc).get("annotations"))
    default = "true" in (
        annotations.get("storageclass.kubernetes.io/is-default-class"),
        annotations.get("storageclass.beta.kubernetes.io/is-default-class"),
    )
    return [
        name_of(sc) + (" (default)" if default else ""),
        as_str(sc.get("provisioner")),
        as_str(sc.get("reclaimPolicy")) or "Delete",
        as_str(sc.get("volumeBindingMode")) or "Immediate",
        sc.get("allowVolumeExpansion") is True,
        age(sc, now),
    ]


def _webhooks_printer() -> Printer:
    return Printer(
        (
            NAME,
            column(
                "Webhooks",
                "integer",
                "Webhooks indicates the number of webhooks registered in this configuration",
            ),
            AGE,
        ),
        lambda o, now: [
            name_of(o),
            len(as_list(o.get("webhooks"))),
            age(o, now),
        ],
    )


_ROLE_BINDING = (
    NAME,
    column(
        "Role",
        desc="RoleRef can reference a Role in the current namespace or a "
        "ClusterRole in the global namespace.",
    ),
    AGE,
)


def _subjects(kind: str) -> tuple[dict[str, Any], ...]:
    return (
        wide("Users", f"Users in the {kind}"),
        wide("Groups", f"Groups in the {kind}"),
        wide("ServiceAccounts", f"ServiceAccounts in the {kind}"),
    )


def csr_row(csr: Obj, now: datetime) -> list[Cell]:
    """kubectl's CertificateSigningRequest row: requested duration and the Pending/Approved,Issued summary."""
    seconds = dig(csr, "spec", "expirationSeconds")
    duration = human_duration(timedelta(seconds=seconds)) if isinstance(seconds, int) else "<none>"
    return [
        name_of(csr),
        age(csr, now),
        as_str(dig(csr, "spec", "signerName")),
        as_str(dig(csr, "spec", "username")),
        duration,
        condition_summary(csr),
    ]


MISC: dict[tuple[str, str], Printer] = {
    ("certificates.k8s.io", "CertificateSigningRequest"): Printer(
        (
            NAME,
            AGE,
            column("SignerName", desc="Signer of the certificate request"),
            column("Requestor", desc="Requestor of the certificate request"),
            column("RequestedDuration", desc="Requested duration of the issued certificate"),
            column("Condition", desc="Condition of the certificate request"),
        ),
        csr_row,
    ),
    ("coordination.k8s.io", "Lease"): Printer(
        (
            NAME,
            column("Holder", desc="holderIdentity contains the identity of the holder of a current lease."),
            AGE,
        ),
        lambda o, now: [
            name_of(o),
            as_str(dig(o, "spec", "holderIdentity")),
            age(o, now),
        ],
    ),
    ("discovery.k8s.io", "EndpointSlice"): Printer(
        (
            NAME,
            column(
                "AddressType", desc="addressType specifies the type of address carried by this EndpointSlice."
            ),
            column(
                "Ports",
                desc="ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            column("Endpoints", desc="endpoints is a list of unique endpoints in this slice."),
            AGE,
        ),
        endpoint_slice_row,
    ),
    ("rbac.authorization.k8s.io", "RoleBinding"): Printer(
        (*_ROLE_BINDING, *_subjects("roleBinding")), role_binding_row
    ),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): Printer(
        (*_ROLE_BINDING, *_subjects("clusterRoleBinding")), role_binding_row
    ),
    ("networking.k8s.io", "Ingress"): Printer(
        (
            NAME,
            column(
                "Class",
                desc="The name of the IngressClass resource that should be used for additional configuration",
            ),
            column("Hosts", desc="Hosts that incoming requests are matched against before the ingress rule"),
            column("Address", desc="Address is a list containing ingress points for the load-balancer"),
            column("Ports", desc="Ports of TLS configurations that open"),
            AGE,
        ),
        ingress_row,
    ),
    ("networking.k8s.io", "IngressClass"): Printer(
        (
            NAME,
            column("Controller", desc="Controller that is responsible for handling this class"),
            column("Parameters", desc="A reference to a resource with additional parameters"),
            AGE,
        ),
        ingress_class_row,
    ),
    ("networking.k8s.io", "NetworkPolicy"): Printer(
        (
            NAME,
            column("Pod-Selector", desc="Selects the pods to which this NetworkPolicy object applies."),
            AGE,
        ),
        lambda o, now: [
            name_of(o),
            format_label_selector(dig(o, "spec", "podSelector") or {}),
            age(o, now),
        ],
    ),
    ("policy", "PodDisruptionBudget"): Printer(
        (
            NAME,
            column("Min Available", desc="The minimum number of pods that must be available."),
            column("Max Unavailable", desc="The maximum number of pods that may be unavailable."),
            column(
                "Allowed Disruptions",
                "integer",
                "Calculated number of pods that may be disrupted at this time.",
            ),
            AGE,
        ),
        lambda o, now: [
            name_of(o),
            _int_or_string(dig(o, "spec", "minAvailable")),
            _int_or_string(dig(o, "spec", "maxUnavailable")),
            as_int(dig(o, "status", "disruptionsAllowed")),
            age(o, now),
        ],
    ),
    ("scheduling.k8s.io", "PriorityClass"): Printer(
        (
            NAME,
            column("Value", "integer", "value represents the integer value of this priority class."),
            column(
                "Global-Default",
                "boolean",
                "globalDefault specifies whether this PriorityClass should be "
                "considered as the default priority for pods that do not have any priority class.",
            ),
            AGE,
            column(
                "PreemptionPolicy",
                desc="preemptionPolicy is the Policy for preempting pods with lower priority.",
            ),
        ),
        lambda o, now: [
            name_of(o),
            as_int(o.get("value")),
            o.get("globalDefault") is True,
            age(o, now),
            as_str(o.get("preemptionPolicy")),
        ],
    ),
    ("storage.k8s.io", "StorageClass"): Printer(
        (
            NAME,
            column("Provisioner", desc="provisioner indicates the type of the provisioner."),
            column(
                "ReclaimPolicy",
                desc="reclaimPolicy controls the reclaimPolicy for dynamically provisioned "
                "PersistentVolumes of this storage class.",
            ),
            column(
                "VolumeBindingMode",
                desc="volumeBindingMode indicates how PersistentVolumeClaims should be "
                "provisioned and bound.",
            ),
            column(
                "AllowVolumeExpansion",
                desc="allowVolumeExpansion shows whether the storage class allow volume expand.",
            ),
            AGE,
        ),
        storage_class_row,
    ),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): _webhooks_printer(),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _webhooks_printer(),
    ("node.k8s.io", "RuntimeClass"): Printer(
        (
            NAME,
            column(
                "Handler",
                desc="handler specifies the underlying runtime and configuration that the CRI "
                "implementation will use to handle pods of this class.",
            ),
            AGE,
        ),
        lambda o, now: [name_of(o), as_str(o.get("handler")), age(o, now)],
    ),
}
