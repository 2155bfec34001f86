"""The service proxy: kube-proxy's iptables mode for skiff's nodes.

Services and EndpointSlices in, iptables rules out. Modules: `model`
(API objects → `ServicePort` values: ports, cluster IP, node port, affinity,
ready endpoints), `rules` (pure: the nat and filter rules, chain names,
restore input and diffs), `iptables` (the `Syncer`: atomic, incremental
`iptables-restore --noflush` of skiff's own chains, jump rules, conntrack
flushes for UDP, cleanup), `syncloop` (coalesced, rate-limited syncs) and
`runner` (`run_proxy`: informers → syncs, until stopped).
"""
