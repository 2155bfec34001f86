"""What every controller is built from: a client, shared informers, and the manager's options.

Controllers never talk to storage or the apiserver's internals: they get a
`Client` (HTTP), an `InformerFactory` whose informers are shared by all
controllers of one manager, and `ControllerOptions` (the flags of
`skiff controller-manager` / `skiff server`). `recorder(component)` makes
an Event recorder named like Kubernetes' ("deployment-controller").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skiff.client import Client, EventRecorder, InformerFactory


@dataclass(frozen=True)
class ControllerOptions:
    # node lifecycle: a node silent this long goes NotReady/Unknown and is tainted unreachable
    node_monitor_grace_period: float = 40.0
    # default toleration of node.kubernetes.io/not-ready and /unreachable before eviction
    default_eviction_seconds: int = 300
    node_monitor_period: float = 5.0
    # HPA sync period and downscale stabilization default
    hpa_sync_period: float = 15.0
    hpa_downscale_stabilization: float = 300.0
    # how often CronJobs are checked
    cronjob_sync_period: float = 10.0
    # the CA that signs approved certificate requests (kube-controller-manager's --cluster-signing-*-file)
    cluster_signing_cert_file: str = ""
    cluster_signing_key_file: str = ""
    # where the local-path provisioner puts volumes on each node (k3s: --default-local-storage-path)
    default_local_storage_path: str = "/var/lib/skiff/storage"
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class ControllerContext:
    client: Client
    informers: InformerFactory
    options: ControllerOptions = field(default_factory=ControllerOptions)

    def recorder(self, component: str) -> EventRecorder:
        return EventRecorder(self.client, component=component)
