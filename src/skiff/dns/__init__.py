"""Cluster DNS: Kubernetes' DNS-based service discovery for skiff, as CoreDNS's kubernetes plugin serves it.

Pods find Services by name (`web.default.svc.cluster.local`, or `web` from
their search domains); this package answers those names from Services and
EndpointSlices watched over the API, and forwards every other name to the
host's resolvers. Modules: `records` (which records the cluster makes: pure),
`forward` (upstream resolvers), `server` (UDP and TCP on the event loop),
`run` (`run_dns`, the component: informers + sockets).
"""

from skiff.dns.forward import Forwarder, default_upstreams, parse_upstream
from skiff.dns.records import ClusterData, Resolver
from skiff.dns.run import run_dns

__all__ = ["ClusterData", "Forwarder", "Resolver", "default_upstreams", "parse_upstream", "run_dns"]
