"""A pod's /etc/resolv.conf from its dnsPolicy and dnsConfig, as the kubelet's DNS configurer forms it.

- `ClusterFirst` (the default) and `ClusterFirstWithHostNet`: the cluster DNS Service as the only
  nameserver, the search path `<ns>.svc.<domain> svc.<domain> <domain>` then the host's, and
  `options ndots:5`. A `ClusterFirst` pod on the host network gets the host's settings instead.
  Without a cluster DNS address the pod falls back to the host's, with a MissingClusterDNS warning.
- `Default`: the node's resolv.conf (the agent's `--resolv-conf`).
- `None`: nothing but the pod's `dnsConfig`.

`dnsConfig` is then merged in: its nameservers and searches are appended (duplicates dropped), its
options override same-named ones. The result is trimmed to the resolver's limits (3 nameservers,
32 search domains, 2048 characters of search path) with a DNSConfigForming warning, as the kubelet
does. Pure functions; the agent reads the host's file once at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_CHARS = 2048
CLUSTER_OPTIONS = ("ndots:5",)


@dataclass(frozen=True)
class ResolverConfig:
    """The three things a resolv.conf says."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def render(self) -> str:
        lines = []
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        lines += [f"nameserver {ns}" for ns in self.nameservers]
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n" if lines else ""


def parse_resolv_conf(text: str) -> ResolverConfig:
    """nameserver lines, the last search (or domain) line, options lines; comments ignored."""
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, values = words[0], words[1:]
        if key == "nameserver" and values:
            servers.append(values[0])
        elif key in ("search", "domain"):
            searches = [v.rstrip(".") for v in values if v.rstrip(".")]
        elif key == "options":
            options += values
    return ResolverConfig(tuple(servers), tuple(searches), tuple(options))


@dataclass(frozen=True)
class PodDNS:
    """The node's side of pod DNS: the agent's --cluster-dns, --cluster-domain and host resolv.conf."""

    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    host: ResolverConfig = field(default_factory=ResolverConfig)

    def for_pod(self, pod: dict[str, Any]) -> tuple[ResolverConfig, list[tuple[str, str]]]:
        """The pod's resolver settings and the warning events (reason, message) forming them gave."""
        spec = pod.get("spec") or {}
        events: list[tuple[str, str]] = []
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        host_network = bool(spec.get("hostNetwork"))
        cluster = policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network)
        if policy == "None":
            config = ResolverConfig()
        elif cluster and self.cluster_dns:
            config = ResolverConfig(self.cluster_dns, self._cluster_searches(pod), CLUSTER_OPTIONS)
        else:
            if cluster:
                msg = (
                    'kubelet does not have ClusterDNS IP configured and cannot create Pod using "ClusterFirst" '
                    'policy. Falling back to "Default" policy.'
                )
                events.append(("MissingClusterDNS", msg))
            config = self.host
        extra = spec.get("dnsConfig")
        if isinstance(extra, dict):
            config = merge(config, extra)
        return fit_limits(config, events)

    def _cluster_searches(self, pod: dict[str, Any]) -> tuple[str, ...]:
        if not self.cluster_domain:
            return self.host.searches
        ns = pod["metadata"].get("namespace") or "default"
        domain = self.cluster_domain
        return _unique([f"{ns}.svc.{domain}", f"svc.{domain}", domain, *self.host.searches])


def merge(config: ResolverConfig, dns_config: dict[str, Any]) -> ResolverConfig:
    """A pod's dnsConfig over a base: servers and searches appended, options overriding by name."""
    servers = _unique([*config.nameservers, *(dns_config.get("nameservers") or [])])
    searches = _unique([*config.searches, *(dns_config.get("searches") or [])])
    options: dict[str, str | None] = {}
    for op in config.options:
        name, sep, value = op.partition(":")
        options[name] = value if sep else None
    for op in dns_config.get("options") or []:
        if isinstance(op, dict) and op.get("name"):
            given = op.get("value")
            options[str(op["name"])] = str(given) if given not in (None, "") else None
    merged = tuple(name if value is None else f"{name}:{value}" for name, value in options.items())
    return ResolverConfig(servers, searches, merged)


def fit_limits(
    config: ResolverConfig, events: list[tuple[str, str]]
) -> tuple[ResolverConfig, list[tuple[str, str]]]:
    """Trim to the resolver's limits, each trim a DNSConfigForming warning."""
    servers, searches = config.nameservers, config.searches
    if len(servers) > MAX_NAMESERVERS:
        servers = servers[:MAX_NAMESERVERS]
        events.append(("DNSConfigForming", "Nameserver limits were exceeded, some nameservers have been "
                       f"omitted, the applied nameserver line is: {' '.join(servers)}"))  # fmt: skip
    if len(searches) > MAX_SEARCH_PATHS or len(" ".join(searches)) > MAX_SEARCH_CHARS:
        kept: list[str] = []
        for domain in searches[:MAX_SEARCH_PATHS]:
            if len(" ".join([*kept, domain])) > MAX_SEARCH_CHARS:
                break
            kept.append(domain)
        searches = tuple(kept)
        events.append(("DNSConfigForming", "Search Line limits were exceeded, some search paths have been "
                       f"omitted, the applied search line is: {' '.join(searches)}"))  # fmt: skip
    return ResolverConfig(servers, searches, config.options), events


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))
