"""Writing the proxy's rules into the kernel: atomic, incremental, and only ever skiff's own chains.

`Syncer.sync(ports)` builds the rules (`skiff.node.proxy.rules`) and hands
`iptables-restore --noflush` only the chains that differ from the last
sync: one transaction per table, every other chain of the host untouched. A
sync that changes nothing runs no command at all. The first sync (and every
full one, after an error or when `verify()` finds a jump or chain gone) rewrites all of skiff's
chains, deletes leftover KUBE-SVC/SEP/EXT chains of an earlier run, and makes
sure the jump rules from PREROUTING, OUTPUT, POSTROUTING, INPUT and FORWARD
exist (checked with `iptables -C`, inserted once with `-I`).

UDP has no connection end: conntrack keeps sending a client's datagrams to a
removed endpoint, or to the REJECT of a service that had none. After each
sync the stale entries are deleted with `conntrack -D` (kube-proxy's
`conntrack.CleanStaleEntries`). `cleanup()` removes the jump rules and every
chain skiff owns. With `netns` set, every command runs in that network
namespace (`ip netns exec`), which is how the tests program a throw-away
"node". Commands are asyncio subprocesses: the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from skiff.node.proxy import rules as r
from skiff.node.proxy.model import ServicePort

log = logging.getLogger(__name__)
_Key = tuple[str, str, str, str]


class ProxySyncError(Exception):
    """A command the proxy needs failed (its stderr is in the message)."""


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


class Commands:
    """Runs iptables, iptables-restore and conntrack, in a network namespace when one is given."""

    def __init__(self, netns: str | None = None, *, iptables: str = "iptables") -> None:
        self.netns = netns
        self.iptables = iptables
        self.prefix: tuple[str, ...] = ("ip", "netns", "exec", netns) if netns else ()

    async def run(self, *argv: str, stdin: str | None = None) -> Result:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    async def restore(self, text: str) -> None:
        res = await self.run(f"{self.iptables}-restore", "-w", "--noflush", stdin=text)
        if res.rc != 0:
            raise ProxySyncError(f"{self.iptables}-restore failed ({res.rc}): {res.err.strip()}")

    async def chains(self, table: str) -> set[str]:
        """The names of the chains in `table` (from `iptables-save`)."""
        res = await self.run(f"{self.iptables}-save", "-t", table)
        if res.rc != 0:
            raise ProxySyncError(f"{self.iptables}-save -t {table} failed ({res.rc}): {res.err.strip()}")
        return {line[1:].split()[0] for line in res.out.splitlines() if line.startswith(":")}

    async def iptables_rule(self, op: str, jump: r.Jump) -> bool:
        """`iptables -w -t TABLE <op> CHAIN ARGS`; whether it succeeded (-C: whether the rule exists)."""
        res = await self.run(self.iptables, "-w", "-t", jump.table, op, jump.chain, *jump.args)
        return res.rc == 0


def _key(sp: ServicePort) -> _Key:
    return (sp.namespace, sp.name, sp.port_name, sp.protocol)


def stale_conntrack(old: Sequence[ServicePort], new: Sequence[ServicePort]) -> list[tuple[str, ...]]:
    """The `conntrack` argument lists that delete UDP flows `new` no longer allows.

    A flow to an endpoint that is gone, and any flow to a service port that had no endpoints
    before (its packets were rejected, and conntrack would keep rejecting them).
    """
    now = {_key(sp): sp for sp in new if sp.protocol == "UDP"}
    before = {_key(sp): sp for sp in old if sp.protocol == "UDP"}
    out: list[tuple[str, ...]] = []
    for key, sp in before.items():
        current = now.get(key)
        kept = set(current.endpoints) if current is not None else set()
        for ep in sp.endpoints:
            if ep not in kept:
                out.append(("-D", "-p", "udp", "--orig-dst", sp.cluster_ip, "--dst-nat", ep.ip))
                if sp.node_port:
                    out.append(("-D", "-p", "udp", "--orig-port-dst", str(sp.node_port), "--dst-nat", ep.ip))
    for key, sp in now.items():
        prev = before.get(key)
        if sp.endpoints and (prev is None or not prev.endpoints):
            out.append(("-D", "-p", "udp", "--orig-dst", sp.cluster_ip))
            if sp.node_port:
                out.append(("-D", "-p", "udp", "--orig-port-dst", str(sp.node_port)))
    return list(dict.fromkeys(out))


class Syncer:
    """Keeps one network namespace's service rules equal to the last `sync(ports)`."""

    def __init__(
        self,
        *,
        cluster_cidr: str | None = None,
        node_port_addresses: Sequence[str] = (),
        netns: str | None = None,
        commands: Commands | None = None,
    ) -> None:
        self.cluster_cidr = cluster_cidr
        self.node_port_addresses = tuple(node_port_addresses)
        self.commands = commands or Commands(netns)
        self.applied: r.Ruleset | None = None  # what the kernel holds, as far as we know; None: unknown
        self.ports: list[ServicePort] = []
        self.writes = 0  # restore transactions written (a no-change sync adds none)
        self._warned_conntrack = False

    def build(self, ports: Sequence[ServicePort]) -> r.Ruleset:
        return r.build(ports, cluster_cidr=self.cluster_cidr, node_port_addresses=self.node_port_addresses)

    def invalidate(self) -> None:
        """Make the next sync a full one (all chains rewritten, leftovers deleted, jumps checked)."""
        self.applied = None

    async def sync(self, ports: Sequence[ServicePort]) -> bool:
        """Program `ports`; whether anything was written. On failure the next sync is a full one."""
        new = self.build(ports)
        full = self.applied is None
        try:
            stale: dict[str, set[str]] = {}
            if full:
                for table in (r.FILTER, r.NAT):
                    stale[table] = {c for c in await self.commands.chains(table) if r.is_ours(table, c)}
            text = r.diff_input(self.applied, new, stale=stale)
            if text is not None:
                await self.commands.restore(text)
                self.writes += 1
            if full:
                await self._ensure_jumps()
        except BaseException:
            self.applied = None
            raise
        self.applied = new
        old, self.ports = self.ports, list(ports)
        await self._flush_conntrack(stale_conntrack(old, self.ports))
        return text is not None

    async def verify(self) -> bool:
        """Whether the kernel still holds what the last sync wrote: every jump rule and every chain.

        Cheaper than a full rewrite (which takes seconds for thousands of services with
        iptables-nft); the periodic check calls this and invalidates only when something is missing.
        """
        if self.applied is None:
            return False
        for jump in r.JUMPS:
            if not await self.commands.iptables_rule("-C", jump):
                log.warning("jump %s/%s -> %s is gone; rewriting all rules", jump.table, jump.chain, jump.args[-1])
                return False
        for table, rules in self.applied.tables():
            missing = set(rules) - await self.commands.chains(table)
            if missing:
                log.warning(
                    "%d chains missing from %s (e.g. %s); rewriting all rules", len(missing), table, min(missing)
                )
                return False
        return True

    async def _ensure_jumps(self) -> None:
        for jump in r.JUMPS:
            if not await self.commands.iptables_rule("-C", jump) and not await self.commands.iptables_rule("-I", jump):
                raise ProxySyncError(f"cannot insert the jump {jump.table}/{jump.chain} -> {jump.args[-1]}")

    async def _flush_conntrack(self, deletions: list[tuple[str, ...]]) -> None:
        if not deletions:
            return
        if shutil.which("conntrack") is None:
            if not self._warned_conntrack:
                log.warning("conntrack not installed: stale UDP flows to removed endpoints are not flushed")
                self._warned_conntrack = True
            return
        for args in deletions:
            res = await self.commands.run("conntrack", *args)
            if res.rc != 0 and "0 flow entries" not in res.err:
                log.warning("conntrack %s failed: %s", " ".join(args), res.err.strip())

    async def cleanup(self) -> None:
        """Remove the jump rules and every chain skiff owns; leave all other rules as they were."""
        for jump in r.JUMPS:
            while await self.commands.iptables_rule("-C", jump):
                if not await self.commands.iptables_rule("-D", jump):
                    break
        ours: dict[str, set[str]] = {}
        for table in (r.FILTER, r.NAT):
            ours[table] = {c for c in await self.commands.chains(table) if r.is_ours(table, c)}
        text = r.cleanup_input(ours)
        if text is not None:
            await self.commands.restore(text)
        self.applied = None
        self.ports = []
