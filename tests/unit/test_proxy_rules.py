"""The service proxy's pure parts: Services/EndpointSlices → ServicePorts → iptables rules, diffs, conntrack."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from skiff.node.proxy import rules as r
from skiff.node.proxy.iptables import Commands, Result, Syncer, stale_conntrack
from skiff.node.proxy.model import SERVICE_NAME_LABEL, Endpoint, ServicePort, service_ports
from skiff.node.proxy.syncloop import SyncLoop


def svc(name: str = "web", *, ns: str = "default", ip: str = "10.43.0.10", **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"name": "http", "port": 80, "protocol": "TCP"}])
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip, **spec}}


def eps(service: str, endpoints: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None,
        ns: str = "default", address_type: str = "IPv4") -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"namespace": ns, "name": f"{service}-x", "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": address_type,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def ep(ip: str, ready: bool | None = True) -> dict[str, Any]:
    return {"addresses": [ip], **({"conditions": {"ready": ready}} if ready is not None else {})}


# --- model ---------------------------------------------------------------------------------------


def test_chain_names_are_kube_proxys() -> None:
    kubernetes = ServicePort("default", "kubernetes", "https", "TCP", "10.43.0.1", 443)
    dns = ServicePort("kube-system", "kube-dns", "dns", "UDP", "10.43.0.10", 53)
    assert r.svc_chain(kubernetes) == "KUBE-SVC-NPX46M4PTMTKRN6Y"  # as on every Kubernetes cluster
    assert r.svc_chain(dns) == "KUBE-SVC-TCOU7JCQXEZGVUNU"
    assert r.ext_chain(kubernetes) == "KUBE-EXT-NPX46M4PTMTKRN6Y"
    assert r.sep_chain(kubernetes, Endpoint("10.0.0.1", 6443)).startswith("KUBE-SEP-")


def test_only_ready_endpoints_of_matching_port_names() -> None:
    slices = [
        eps("web", [ep("10.42.0.3"), ep("10.42.0.2", ready=None), ep("10.42.0.4", ready=False)]),
        eps("web", [ep("10.42.1.5")], ports=[{"name": "metrics", "port": 9090, "protocol": "TCP"}]),
        eps("web", [ep("fd00::1")], address_type="IPv6"),
        eps("other", [ep("10.42.9.9")]),
    ]
    service = svc(ports=[{"name": "http", "port": 80}, {"name": "admin", "port": 81}])
    http, admin = sorted(service_ports([service], slices), key=lambda p: p.port)
    assert http.endpoints == (Endpoint("10.42.0.2", 8080), Endpoint("10.42.0.3", 8080))
    assert admin.endpoints == ()  # no endpoint has a port named "admin"


@pytest.mark.parametrize(
    "spec",
    [{"clusterIP": "None"}, {"type": "ExternalName", "externalName": "x.example"}, {"clusterIP": ""}],
    ids=["headless", "externalname", "unallocated"],
)
def test_services_without_a_cluster_ip_are_skipped(spec: dict[str, Any]) -> None:
    service = svc()
    service["spec"].update(spec)
    assert service_ports([service], [eps("web", [ep("10.42.0.2")])]) == []


# --- rules ---------------------------------------------------------------------------------------

WEB = ServicePort("default", "web", "http", "TCP", "10.43.0.10", 80, endpoints=(Endpoint("10.42.0.2", 8080),))


def test_exact_rules_for_one_service_with_one_endpoint() -> None:
    svc_chain, sep = r.svc_chain(WEB), r.sep_chain(WEB, WEB.endpoints[0])
    text = r.build([WEB], cluster_cidr="10.42.0.0/16").restore_input()
    assert text == "\n".join([
        "*filter",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-EXTERNAL-SERVICES - [0:0]",
        ":KUBE-FORWARD - [0:0]",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "COMMIT",
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-NODEPORTS - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
        f":{svc_chain} - [0:0]",
        f":{sep} - [0:0]",
        f'-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.43.0.10 '
        f"--dport 80 -j {svc_chain}",
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
        'in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        f'-A {svc_chain} -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.43.0.10 '
        "--dport 80 ! -s 10.42.0.0/16 -j KUBE-MARK-MASQ",
        f'-A {svc_chain} -m comment --comment "default/web:http -> 10.42.0.2:8080" -j {sep}',
        f"-A {sep} -m comment --comment default/web:http -s 10.42.0.2 -j KUBE-MARK-MASQ",
        f"-A {sep} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.42.0.2:8080",
        "COMMIT",
        "",
    ])  # fmt: skip


def test_random_balancing_probabilities() -> None:
    four = ServicePort("ns", "s", "", "TCP", "10.43.0.5", 80, endpoints=tuple(Endpoint(f"10.42.0.{i}", 80)
                                                                             for i in range(1, 5)))  # fmt: skip
    rules = r.build([four]).nat[r.svc_chain(four)]
    jumps = [line for line in rules if "-j KUBE-SEP-" in line]
    assert [line.split("--probability ")[1].split()[0] if "--probability" in line else None for line in jumps] == [
        "0.2500000000", "0.3333333333", "0.5000000000", None]  # fmt: skip
    assert not any("KUBE-MARK-MASQ" in line for line in rules)  # no cluster CIDR: no off-cluster masquerade
    assert [r.sep_chain(four, e) for e in four.endpoints] == [line.split("-j ")[-1] for line in jumps]


def test_session_affinity_uses_recent() -> None:
    sticky = ServicePort("ns", "s", "", "TCP", "10.43.0.5", 80, affinity_timeout=600,
                         endpoints=(Endpoint("10.42.0.1", 80), Endpoint("10.42.0.2", 80)))  # fmt: skip
    ruleset = r.build([sticky])
    seps = [r.sep_chain(sticky, e) for e in sticky.endpoints]
    svc_rules = ruleset.nat[r.svc_chain(sticky)]
    assert [f"--name {sep} --rcheck --seconds 600 --reap -j {sep}" in svc_rules[i] for i, sep in enumerate(seps)] == [
        True, True]  # fmt: skip
    assert all(f"-m recent --name {sep} --set" in ruleset.nat[sep][1] for sep in seps)


def test_no_endpoints_is_rejected_in_filter_and_absent_from_nat() -> None:
    empty = ServicePort("ns", "empty", "p", "UDP", "10.43.0.7", 53, node_port=30053)
    ruleset = r.build([empty])
    assert ruleset.filter[r.KUBE_SERVICES] == (
        '-m comment --comment "ns/empty:p has no endpoints" -m udp -p udp -d 10.43.0.7 --dport 53 -j REJECT',
    )
    assert ruleset.filter[r.KUBE_EXTERNAL_SERVICES] == (
        '-m comment --comment "ns/empty:p has no endpoints" -m addrtype --dst-type LOCAL -m udp -p udp '
        "--dport 30053 -j REJECT",
    )
    assert not any(c.startswith("KUBE-SVC-") for c in ruleset.nat)
    assert ruleset.nat[r.KUBE_NODEPORTS] == ()


def test_node_port_masquerades_and_jumps_to_the_service() -> None:
    np = ServicePort("ns", "np", "", "TCP", "10.43.0.8", 80, node_port=30080, endpoints=(Endpoint("10.42.0.9", 80),))
    ruleset = r.build([np], node_port_addresses=["192.168.1.5"])
    ext, svc_chain = r.ext_chain(np), r.svc_chain(np)
    assert ruleset.nat[r.KUBE_NODEPORTS] == (f"-m comment --comment ns/np -m tcp -p tcp --dport 30080 -j {ext}",)
    assert ruleset.nat[ext] == (
        '-m comment --comment "masquerade traffic for ns/np external destinations" -j KUBE-MARK-MASQ',
        f"-j {svc_chain}",
    )
    assert ruleset.nat[r.KUBE_SERVICES][-1].endswith("-d 192.168.1.5 -j KUBE-NODEPORTS")


def test_hairpin_masquerade_for_each_endpoint() -> None:
    ruleset = r.build([WEB])
    assert ruleset.nat[r.sep_chain(WEB, WEB.endpoints[0])][0].endswith("-s 10.42.0.2 -j KUBE-MARK-MASQ")


def test_same_input_same_output_and_diffs() -> None:
    two = ServicePort("ns", "b", "", "TCP", "10.43.0.9", 80, endpoints=(Endpoint("10.42.0.3", 80),))
    first, again = r.build([WEB, two]), r.build([WEB, two])
    assert first == again and first.restore_input() == again.restore_input()
    assert r.diff_input(first, again) is None
    # one endpoint more for `two`: only its SVC chain and the new SEP chain are written
    more = ServicePort("ns", "b", "", "TCP", "10.43.0.9", 80, endpoints=(Endpoint("10.42.0.3", 80),
                                                                         Endpoint("10.42.0.4", 80)))  # fmt: skip
    diff = r.diff_input(first, r.build([WEB, more]))
    assert diff is not None
    declared = [line[1:].split()[0] for line in diff.splitlines() if line.startswith(":")]
    assert declared == [r.svc_chain(more), r.sep_chain(more, Endpoint("10.42.0.4", 80))]
    # `two` gone: its chains are flushed and deleted, KUBE-SERVICES rewritten
    diff = r.diff_input(first, r.build([WEB]))
    assert diff is not None
    assert f"-X {r.svc_chain(two)}" in diff and f"-X {r.sep_chain(two, two.endpoints[0])}" in diff
    assert ":KUBE-SERVICES - [0:0]" in diff and "*filter" not in diff


def test_only_our_chains_are_ours() -> None:
    assert r.is_ours("nat", "KUBE-SVC-ABC") and r.is_ours("nat", "KUBE-MARK-MASQ")
    assert not r.is_ours("nat", "CNI-HOSTPORT-DNAT") and not r.is_ours("nat", "POSTROUTING")
    assert not r.is_ours("filter", "KUBE-SVC-ABC") and r.is_ours("filter", "KUBE-FORWARD")


def test_stale_udp_conntrack_entries() -> None:
    a, b = Endpoint("10.42.0.2", 53), Endpoint("10.42.0.3", 53)
    old = [ServicePort("ns", "dns", "", "UDP", "10.43.0.10", 53, node_port=30053, endpoints=(a, b))]
    new = [ServicePort("ns", "dns", "", "UDP", "10.43.0.10", 53, node_port=30053, endpoints=(a,))]
    assert stale_conntrack(old, new) == [
        ("-D", "-p", "udp", "--orig-dst", "10.43.0.10", "--dst-nat", "10.42.0.3"),
        ("-D", "-p", "udp", "--orig-port-dst", "30053", "--dst-nat", "10.42.0.3"),
    ]
    none = [ServicePort("ns", "dns", "", "UDP", "10.43.0.10", 53)]
    assert stale_conntrack(none, [ServicePort("ns", "dns", "", "UDP", "10.43.0.10", 53, endpoints=(a,))]) == [
        ("-D", "-p", "udp", "--orig-dst", "10.43.0.10")]  # fmt: skip
    tcp = [ServicePort("ns", "web", "", "TCP", "10.43.0.11", 80, endpoints=(a,))]
    assert stale_conntrack(tcp, []) == []


# --- syncer and sync loop, with fake commands ----------------------------------------------------


class FakeCommands(Commands):
    def __init__(self) -> None:
        super().__init__(None)
        self.restores: list[str] = []
        self.calls: list[tuple[str, ...]] = []

    async def run(self, *argv: str, stdin: str | None = None) -> Result:
        self.calls.append(argv)
        if argv[0] == "iptables-restore":
            assert stdin is not None
            self.restores.append(stdin)
        if argv[0] == "iptables-save":
            return Result(0, ":PREROUTING ACCEPT [0:0]\n:KUBE-SVC-OLDOLDOLDOLDOLD - [0:0]\n:OTHER - [0:0]\n", "")
        return Result(0, "", "")


async def test_syncer_writes_only_changes_and_deletes_leftovers() -> None:
    fake = FakeCommands()
    syncer = Syncer(commands=fake)
    assert await syncer.sync([WEB])
    assert "-X KUBE-SVC-OLDOLDOLDOLDOLD" in fake.restores[0] and "OTHER" not in fake.restores[0]
    assert sum(1 for c in fake.calls if "-C" in c) == len(r.JUMPS)  # jumps checked on a full sync
    calls = len(fake.calls)
    assert not await syncer.sync([WEB])
    assert len(fake.calls) == calls  # nothing changed: no command at all


async def test_sync_loop_coalesces_bursts() -> None:
    calls: list[bool] = []

    async def sync(full: bool) -> None:
        calls.append(full)

    # min_interval is far longer than the burst takes, even on a loaded machine
    loop = SyncLoop(sync, min_interval=2.0, batch_delay=0.05, full_interval=60)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    for _ in range(100):
        if calls:
            break
        await asyncio.sleep(0.01)
    assert calls == [True]  # the first sync is full and immediate
    for _ in range(20):
        loop.request()
        await asyncio.sleep(0.005)
    for _ in range(500):
        if len(calls) > 1:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert calls == [True, False]  # twenty requests, one sync
    stop.set()
    await asyncio.wait_for(task, 1)


# --- traffic policies ----------------------------------------------------------------------------

HERE, THERE = Endpoint("10.42.0.2", 80, local=True), Endpoint("10.42.1.2", 80)


def test_local_endpoints_come_from_node_names() -> None:
    slices = [eps("web", [{**ep("10.42.0.2"), "nodeName": "a"}, {**ep("10.42.1.2"), "nodeName": "b"}])]
    (port,) = service_ports([svc(internalTrafficPolicy="Local")], slices, node_name="a")
    assert port.internal_local and not port.external_local
    assert [(e.ip, e.local) for e in port.endpoints] == [("10.42.0.2", True), ("10.42.1.2", False)]


def test_internal_traffic_policy_local() -> None:
    sp = ServicePort("ns", "s", "", "TCP", "10.43.0.5", 80, internal_local=True, endpoints=(HERE, THERE))
    ruleset = r.build([sp], cluster_cidr="10.42.0.0/16")
    svl = r.svl_chain(sp)
    assert svl.startswith("KUBE-SVL-") and ruleset.nat[r.KUBE_SERVICES][0].endswith(f"-j {svl}")
    assert ruleset.nat[svl] == (f'-m comment --comment "ns/s -> 10.42.0.2:80" -j {r.sep_chain(sp, HERE)}',)
    assert r.svc_chain(sp) not in ruleset.nat and r.sep_chain(sp, THERE) not in ruleset.nat
    # no endpoint on this node: dropped (there are endpoints, elsewhere), not rejected
    none_here = ServicePort("ns", "s", "", "TCP", "10.43.0.5", 80, internal_local=True, endpoints=(THERE,))
    ruleset = r.build([none_here])
    assert ruleset.filter[r.KUBE_SERVICES] == (
        '-m comment --comment "ns/s has no local endpoints" -m tcp -p tcp -d 10.43.0.5 --dport 80 -j DROP',
    )
    assert not any(c.startswith(("KUBE-SVL-", "KUBE-SVC-")) for c in ruleset.nat)


def test_external_traffic_policy_local() -> None:
    sp = ServicePort("ns", "s", "", "TCP", "10.43.0.5", 80, node_port=30005, external_local=True,
                     endpoints=(HERE, THERE))  # fmt: skip
    ruleset = r.build([sp], cluster_cidr="10.42.0.0/16")
    svc_chain, svl = r.svc_chain(sp), r.svl_chain(sp)
    assert ruleset.nat[r.ext_chain(sp)] == (
        f'-m comment --comment "pod traffic for ns/s external destinations" -s 10.42.0.0/16 -j {svc_chain}',
        '-m comment --comment "masquerade LOCAL traffic for ns/s external destinations" '
        "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
        '-m comment --comment "route LOCAL traffic for ns/s external destinations" '
        f"-m addrtype --src-type LOCAL -j {svc_chain}",
        f"-j {svl}",
    )
    assert len(ruleset.nat[svc_chain]) == 3  # masquerade + both endpoints: cluster IP traffic goes anywhere
    assert ruleset.nat[svl] == (f'-m comment --comment "ns/s -> 10.42.0.2:80" -j {r.sep_chain(sp, HERE)}',)
    none_here = ServicePort("ns", "s", "", "TCP", "10.43.0.5", 80, node_port=30005, external_local=True,
                            endpoints=(THERE,))  # fmt: skip
    ruleset = r.build([none_here])
    assert ruleset.filter[r.KUBE_EXTERNAL_SERVICES] == (
        '-m comment --comment "ns/s has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp '
        "--dport 30005 -j DROP",
    )
    assert not ruleset.nat[r.ext_chain(none_here)][-1].startswith("-j KUBE-SVL-")


def test_external_and_load_balancer_ips() -> None:
    service = svc(type="LoadBalancer", externalIPs=["192.0.2.7", "fd00::7"],
                  ports=[{"name": "http", "port": 80, "nodePort": 30007}])  # fmt: skip
    service["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}
    (sp,) = service_ports([service], [eps("web", [ep("10.42.0.2")])])
    assert sp.external_ips == ("192.0.2.7", "198.51.100.9") and sp.node_port == 30007
    ruleset = r.build([sp])
    ext = r.ext_chain(sp)
    assert ruleset.nat[r.KUBE_SERVICES][1:3] == (
        f'-m comment --comment "default/web:http external IP" -m tcp -p tcp -d 192.0.2.7 --dport 80 -j {ext}',
        f'-m comment --comment "default/web:http external IP" -m tcp -p tcp -d 198.51.100.9 --dport 80 -j {ext}',
    )
    (empty,) = service_ports([service], [])
    assert r.build([empty]).filter[r.KUBE_EXTERNAL_SERVICES][1:] == (
        '-m comment --comment "default/web:http has no endpoints" -m tcp -p tcp -d 192.0.2.7 --dport 80 -j REJECT',
        '-m comment --comment "default/web:http has no endpoints" -m tcp -p tcp -d 198.51.100.9 --dport 80 -j REJECT',
    )
