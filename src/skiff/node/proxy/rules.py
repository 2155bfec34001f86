"""The iptables rules for a set of service ports, as kube-proxy's iptables mode writes them.

Pure: `build(ports, ...)` returns a `Ruleset` (chain → rules, per table) and
`Ruleset.restore_input()` the complete `iptables-restore` text; the syncer
(`skiff.node.proxy.iptables`) writes only what differs from the last sync
(`diff_input`). Same input, same output, byte for byte: chain names are
hashes (sha256 → base32, 16 characters, as kube-proxy's `portProtoHash`) and
endpoints are sorted.

The nat table, per service port with ready endpoints:

    KUBE-SERVICES  -d <clusterIP> --dport <port>            -j KUBE-SVC-<h>
    KUBE-SVC-<h>   ! -s <cluster CIDR> (off-cluster callers) -j KUBE-MARK-MASQ
                   -m recent --rcheck (sessionAffinity)      -j KUBE-SEP-<e>   one per endpoint
                   -m statistic --probability 1/n            -j KUBE-SEP-<e1>  then 1/(n-1), ...
                                                             -j KUBE-SEP-<en>  the last one always
    KUBE-SEP-<e>   -s <endpoint IP> (hairpin)                -j KUBE-MARK-MASQ
                   [-m recent --set]                         -j DNAT --to-destination <ip:port>
    KUBE-NODEPORTS --dport <nodePort>                        -j KUBE-EXT-<h>
    KUBE-EXT-<h>   (always masqueraded)                      -j KUBE-MARK-MASQ, -j KUBE-SVC-<h>

With `internalTrafficPolicy: Local` the cluster IP jumps to KUBE-SVL-<h>
(only this node's endpoints, no masquerade; DROP in filter when there are
none). With `externalTrafficPolicy: Local` KUBE-EXT-<h> keeps the client's
address and jumps to KUBE-SVL-<h>, except for pods (`-s <cluster CIDR>`) and
the node itself (`--src-type LOCAL`, masqueraded), which go to KUBE-SVC-<h>.

External IPs (`spec.externalIPs`, and a LoadBalancer's ingress IPs) jump from
KUBE-SERVICES to KUBE-EXT-<h> as node ports do.

KUBE-SERVICES ends with the jump to KUBE-NODEPORTS for local destinations
(`-m addrtype --dst-type LOCAL`, or `-d` each of `--nodeport-addresses`).
KUBE-MARK-MASQ sets mark 0x4000; KUBE-POSTROUTING masquerades marked packets.
The filter table rejects traffic to service ports without endpoints (connection
refused at once, not a hang) in KUBE-SERVICES and KUBE-EXTERNAL-SERVICES, and
KUBE-FORWARD accepts marked and established traffic on hosts whose FORWARD
policy is DROP. `JUMPS` are the rules in the built-in chains that lead here.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from skiff.node.proxy.model import Endpoint, ServicePort

MASQ_MARK = "0x4000"
NAT, FILTER = "nat", "filter"
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_FORWARD = "KUBE-FORWARD"
NAT_BASE_CHAINS = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)
FILTER_BASE_CHAINS = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD)
HASHED_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-EXT-")  # per-service chains, all of them ours

Rules = dict[str, tuple[str, ...]]  # chain -> rule arguments (what follows `-A CHAIN`), in order


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that leads into one of ours, inserted at the top once."""

    table: str
    chain: str
    args: tuple[str, ...]


def _jump(table: str, chain: str, target: str, comment: str, *, new_only: bool = False) -> Jump:
    state = ("-m", "conntrack", "--ctstate", "NEW") if new_only else ()
    return Jump(table, chain, (*state, "-m", "comment", "--comment", comment, "-j", target))


JUMPS: tuple[Jump, ...] = (
    _jump(FILTER, "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", new_only=True),
    _jump(FILTER, "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", new_only=True),
    _jump(FILTER, "FORWARD", KUBE_SERVICES, "kubernetes service portals", new_only=True),
    _jump(FILTER, "OUTPUT", KUBE_SERVICES, "kubernetes service portals", new_only=True),
    _jump(FILTER, "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    _jump(NAT, "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    _jump(NAT, "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    _jump(NAT, "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
)


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(sp: ServicePort) -> str:
    return "KUBE-SVC-" + _hash(sp.name_string + sp.protocol.lower())


def svl_chain(sp: ServicePort) -> str:
    return "KUBE-SVL-" + _hash(sp.name_string + sp.protocol.lower())


def ext_chain(sp: ServicePort) -> str:
    return "KUBE-EXT-" + _hash(sp.name_string + sp.protocol.lower())


def sep_chain(sp: ServicePort, endpoint: Endpoint) -> str:
    return "KUBE-SEP-" + _hash(sp.name_string + sp.protocol.lower() + str(endpoint))


def quote(arg: str) -> str:
    """An argument as iptables-restore reads it (double quotes around anything with spaces)."""
    return f'"{arg}"' if (" " in arg or not arg) else arg


def _comment(text: str) -> str:
    return f"-m comment --comment {quote(text)}"


def _proto(sp: ServicePort) -> str:
    p = sp.protocol.lower()
    return f"-m {p} -p {p}"


def probability(i: int, n: int) -> str:
    """The statistic-match probability of the i-th of n endpoints (0-based): 1/(n-i), as kube-proxy prints it."""
    return f"{1.0 / (n - i):0.10f}"


@dataclass(frozen=True)
class Ruleset:
    nat: Rules
    filter: Rules

    def tables(self) -> tuple[tuple[str, Rules], ...]:
        return ((FILTER, self.filter), (NAT, self.nat))

    def restore_input(self) -> str:
        """The full `iptables-restore --noflush` input: every chain declared (flushed) and written."""
        out: list[str] = []
        for table, rules in self.tables():
            out.append(f"*{table}")
            out.extend(f":{chain} - [0:0]" for chain in rules)
            for chain, lines in rules.items():
                out.extend(f"-A {chain} {line}" for line in lines)
            out.append("COMMIT")
        return "\n".join(out) + "\n"


def _dst_local(node_port_addresses: Sequence[str]) -> list[str]:
    if not node_port_addresses:
        return ["-m addrtype --dst-type LOCAL"]
    return [f"-d {addr}" for addr in node_port_addresses]


class _Fragment(NamedTuple):
    """One service port's share of the rules."""

    services: tuple[str, ...]  # nat KUBE-SERVICES
    nodeports: tuple[str, ...]  # nat KUBE-NODEPORTS
    chains: tuple[tuple[str, tuple[str, ...]], ...]  # its own nat chains
    rejects: tuple[str, ...]  # filter KUBE-SERVICES
    external_rejects: tuple[str, ...]  # filter KUBE-EXTERNAL-SERVICES


@functools.lru_cache(maxsize=1 << 16)
def _fragment(sp: ServicePort, cluster_cidr: str | None, dsts: tuple[str, ...]) -> _Fragment:
    """The rules of one service port (cached: an unchanged port costs nothing in the next sync)."""
    name, proto = sp.name_string, _proto(sp)
    dest = f"{proto} -d {sp.cluster_ip} --dport {sp.port}"
    # where traffic from outside comes in: node ports (on `dsts`) and external/load-balancer IPs
    entries = [f"{dst} {proto} --dport {sp.node_port}" for dst in dsts] if sp.node_port else []
    entries += [f"{proto} -d {ip} --dport {sp.port}" for ip in sp.external_ips]
    if not sp.endpoints:
        reject = _comment(name + " has no endpoints")
        return _Fragment((), (), (), (f"{reject} {dest} -j REJECT",), tuple(f"{reject} {e} -j REJECT" for e in entries))
    svc, svl = svc_chain(sp), svl_chain(sp)
    local = sp.local_endpoints
    uses_cluster = not sp.internal_local or bool(entries)  # ETP Local short-circuits pods to SVC
    uses_local = bool(local) and (sp.internal_local or sp.external_local)
    chains: list[tuple[str, tuple[str, ...]]] = []
    services: tuple[str, ...] = ()
    rejects: list[str] = []
    if not sp.internal_local:
        services = (f"{_comment(name + ' cluster IP')} {dest} -j {svc}",)
    elif local:
        services = (f"{_comment(name + ' cluster IP')} {dest} -j {svl}",)
    else:
        rejects.append(f"{_comment(name + ' has no local endpoints')} {dest} -j DROP")
    if uses_cluster:
        masq = (
            (f"{_comment(name + ' cluster IP')} {dest} ! -s {cluster_cidr} -j {KUBE_MARK_MASQ}",)
            if cluster_cidr
            else ()
        )
        chains.append((svc, masq + _balance(sp, sp.endpoints)))
    if uses_local:
        chains.append((svl, _balance(sp, local)))
    nodeports: tuple[str, ...] = ()
    external_rejects: tuple[str, ...] = ()
    if entries:
        ext = ext_chain(sp)
        if sp.node_port:
            nodeports = (f"{_comment(name)} {proto} --dport {sp.node_port} -j {ext}",)
        services += tuple(f"{_comment(name + ' external IP')} {proto} -d {ip} --dport {sp.port} -j {ext}"
                          for ip in sp.external_ips)  # fmt: skip
        ext_rules: list[str] = []
        if not sp.external_local:
            ext_rules += [f"{_comment(f'masquerade traffic for {name} external destinations')} -j {KUBE_MARK_MASQ}",
                          f"-j {svc}"]  # fmt: skip
        else:
            if cluster_cidr:
                ext_rules.append(
                    f"{_comment(f'pod traffic for {name} external destinations')} -s {cluster_cidr} -j {svc}"
                )
            local_src = "-m addrtype --src-type LOCAL"  # the node itself: masqueraded, to any endpoint
            masq_local = _comment(f"masquerade LOCAL traffic for {name} external destinations")
            route_local = _comment(f"route LOCAL traffic for {name} external destinations")
            ext_rules += [f"{masq_local} {local_src} -j {KUBE_MARK_MASQ}", f"{route_local} {local_src} -j {svc}"]
            if local:
                ext_rules.append(f"-j {svl}")  # the client's address is kept: no masquerade
            else:
                no_local = _comment(name + " has no local endpoints")
                external_rejects = tuple(f"{no_local} {e} -j DROP" for e in entries)
        chains.append((ext, tuple(ext_rules)))
    recent = " -m recent --name {sep} --set" if sp.affinity_timeout is not None else ""
    for ep in sp.endpoints if uses_cluster else local:
        sep = sep_chain(sp, ep)
        chains.append((sep, (
            f"{_comment(name)} -s {ep.ip} -j {KUBE_MARK_MASQ}",
            f"{_comment(name)}{recent.format(sep=sep)} {proto} -j DNAT --to-destination {ep}",
        )))  # fmt: skip
    return _Fragment(services, nodeports, tuple(chains), tuple(rejects), external_rejects)


def _balance(sp: ServicePort, endpoints: Sequence[Endpoint]) -> tuple[str, ...]:
    """The jumps of a SVC or SVL chain: affinity checks first, then random 1/n, 1/(n-1), ..., the last always."""
    name = sp.name_string
    seps = [(ep, sep_chain(sp, ep)) for ep in endpoints]
    out: list[str] = []
    if sp.affinity_timeout is not None:
        for ep, sep in seps:
            out.append(
                f"{_comment(f'{name} -> {ep}')} -m recent --name {sep} --rcheck "
                f"--seconds {sp.affinity_timeout} --reap -j {sep}"
            )
    n = len(seps)
    for i, (ep, sep) in enumerate(seps):
        chance = f" -m statistic --mode random --probability {probability(i, n)}" if i < n - 1 else ""
        out.append(f"{_comment(f'{name} -> {ep}')}{chance} -j {sep}")
    return tuple(out)


def build(
    ports: Iterable[ServicePort], *, cluster_cidr: str | None = None, node_port_addresses: Sequence[str] = ()
) -> Ruleset:
    """The nat and filter rules for `ports` (see the module docstring for their shape)."""
    nat: Rules = {}
    services: list[str] = []
    nodeports: list[str] = []
    per_service: Rules = {}
    f_services: list[str] = []
    f_external: list[str] = []
    dsts = tuple(_dst_local(node_port_addresses))
    for sp in ports:
        frag = _fragment(sp, cluster_cidr, dsts)
        services.extend(frag.services)
        nodeports.extend(frag.nodeports)
        per_service.update(frag.chains)
        f_services.extend(frag.rejects)
        f_external.extend(frag.external_rejects)
    comment = _comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
    services.extend(f"{comment} {dst} -j {KUBE_NODEPORTS}" for dst in dsts)
    nat[KUBE_SERVICES] = tuple(services)
    nat[KUBE_NODEPORTS] = tuple(nodeports)
    nat[KUBE_POSTROUTING] = (
        f"-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-j MARK --xor-mark {MASQ_MARK}",
        f"{_comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully",
    )
    nat[KUBE_MARK_MASQ] = (f"-j MARK --or-mark {MASQ_MARK}",)
    nat.update(per_service)
    filter_: Rules = {
        KUBE_SERVICES: tuple(f_services),
        KUBE_EXTERNAL_SERVICES: tuple(f_external),
        KUBE_FORWARD: (
            "-m conntrack --ctstate INVALID -j DROP",
            f"{_comment('kubernetes forwarding rules')} -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
            f"{_comment('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ),
    }
    return Ruleset(nat=nat, filter=filter_)


def diff_input(old: Ruleset | None, new: Ruleset, *, stale: dict[str, set[str]] | None = None) -> str | None:
    """The `iptables-restore --noflush` input that turns `old` into `new`, or None if they are the same.

    Only chains whose rules changed are declared (flushed) and written; chains of `old`
    that `new` lacks, and the `stale` chains found left over per table, are flushed and deleted.
    """
    out: list[str] = []
    for table, rules in new.tables():
        before = (old.nat if table == NAT else old.filter) if old is not None else {}
        changed = [chain for chain, lines in rules.items() if before.get(chain) != lines]
        gone = sorted((set(before) | (stale or {}).get(table, set())) - set(rules))
        if not changed and not gone:
            continue
        out.append(f"*{table}")
        out.extend(f":{chain} - [0:0]" for chain in [*changed, *gone])
        for chain in changed:
            out.extend(f"-A {chain} {line}" for line in rules[chain])
        out.extend(f"-X {chain}" for chain in gone)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else None


def cleanup_input(chains: dict[str, set[str]]) -> str | None:
    """The restore input deleting `chains` (per table); None when there are none."""
    out: list[str] = []
    for table in (FILTER, NAT):
        names = sorted(chains.get(table, set()))
        if names:
            out.append(f"*{table}")
            out.extend(f":{c} - [0:0]" for c in names)
            out.extend(f"-X {c}" for c in names)
            out.append("COMMIT")
    return "\n".join(out) + "\n" if out else None


def is_ours(table: str, chain: str) -> bool:
    """Whether `chain` in `table` is one skiff's proxy owns (and may flush or delete)."""
    base = NAT_BASE_CHAINS if table == NAT else FILTER_BASE_CHAINS
    return chain in base or (table == NAT and chain.startswith(HASHED_PREFIXES))
