"""Pod networking through the standard CNI plugins, invoked directly (CNI spec 1.0).

The node's network is a conflist: `bridge` (a Linux bridge, the gateway of the pod CIDR, with IP
masquerade and hairpin mode) with `host-local` IPAM on the node's pod CIDR, then `portmap` for
hostPorts. The pod's loopback is brought up by the `loopback` plugin. ADD runs the plugins in
order, each getting the previous one's result; the final result is saved on disk so that DEL can
hand it back (as prevResult) after an agent restart; DEL runs them in reverse and frees the IP.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff.node.runtime.proc import CommandError, host_env, run

CNI_VERSION = "1.0.0"
DEFAULT_CNI_PATH = ("/usr/lib/cni", "/opt/cni/bin")


class CNIError(Exception):
    """A plugin failed; the message is the plugin's error (code, msg, details)."""


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """The node's pod network: a bridge on the node's pod CIDR."""

    name: str = "skiff"
    bridge: str = "skiff0"
    subnet: str = "10.42.0.0/24"
    range_start: str | None = None
    range_end: str | None = None
    mtu: int | None = None
    ip_masq: bool = True  # the bridge plugin masquerades what leaves the subnet (off: the agent's pod network does)
    state_dir: Path = Path("/var/lib/skiff/cni")
    cni_path: tuple[str, ...] = field(default=DEFAULT_CNI_PATH)

    def conflist(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"subnet": self.subnet}
        if self.range_start:
            rng["rangeStart"] = self.range_start
        if self.range_end:
            rng["rangeEnd"] = self.range_end
        bridge: dict[str, Any] = {
            "type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": self.ip_masq, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[rng]], "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": str(self.state_dir / "networks")},
        }  # fmt: skip
        if self.mtu:
            bridge["mtu"] = self.mtu
        portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
        return {"cniVersion": CNI_VERSION, "name": self.name, "plugins": [bridge, portmap]}


@dataclass(frozen=True)
class Attachment:
    """What ADD gave the pod: its address and the raw result (kept for DEL)."""

    ip: str
    result: dict[str, Any]


class CNI:
    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        self.results_dir = config.state_dir / "results"

    def _result_file(self, container_id: str) -> Path:
        return self.results_dir / f"{self.config.name}-{container_id}-eth0.json"

    async def _invoke(
        self, plugin: dict[str, Any], command: str, container_id: str, netns: str, ifname: str,
        prev: dict[str, Any] | None, runtime_config: dict[str, Any],
    ) -> dict[str, Any]:
        conf = {"cniVersion": CNI_VERSION, "name": self.config.name, **plugin}
        wanted = {k for k, on in plugin.get("capabilities", {}).items() if on}
        if rc := {k: v for k, v in runtime_config.items() if k in wanted}:
            conf["runtimeConfig"] = rc
        conf.pop("capabilities", None)
        if prev is not None:
            conf["prevResult"] = prev
        binary = self._find(str(plugin["type"]))
        env = host_env(CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_NETNS=netns, CNI_IFNAME=ifname,
                       CNI_PATH=":".join(self.config.cni_path))  # fmt: skip
        try:
            _, out, _ = await run(binary, stdin=json.dumps(conf).encode(), env=env)
        except CommandError as exc:
            raise CNIError(f"{plugin['type']} {command}: {_plugin_error(exc)}") from exc
        return json.loads(out) if out.strip() else {}

    def _find(self, plugin_type: str) -> str:
        for directory in self.config.cni_path:
            candidate = Path(directory) / plugin_type
            if candidate.exists():
                return str(candidate)
        raise CNIError(f"CNI plugin {plugin_type!r} not found in {':'.join(self.config.cni_path)}")

    async def add(
        self, container_id: str, netns: Path, *, port_mappings: list[dict[str, Any]] | None = None,
        loopback: bool = True,
    ) -> Attachment:
        """Loopback up (unless the caller did, `loopback=False`), then the conflist's ADD; returns the pod's
        IPv4 address."""
        # the loopback is its own interface: brought up while the chain runs (each plugin is a process)
        lo = self._invoke({"type": "loopback"}, "ADD", container_id, str(netns), "lo", None, {}) if loopback else None
        lo_task = asyncio.create_task(lo) if lo is not None else None
        runtime_config = {"portMappings": port_mappings or []}
        result: dict[str, Any] | None = None
        done: list[dict[str, Any]] = []
        # portmap only has work with hostPorts: without any it is not run (and so not DEL'd either)
        chain = [p for p in self.config.conflist()["plugins"] if port_mappings or p["type"] != "portmap"]
        try:
            for plugin in chain:
                result = await self._invoke(plugin, "ADD", container_id, str(netns), "eth0", result, runtime_config)
                done.append(plugin)
        except CNIError:
            for plugin in reversed(done):
                await self._invoke(plugin, "DEL", container_id, str(netns), "eth0", result, runtime_config)
            raise
        finally:
            if lo_task is not None:
                await asyncio.gather(lo_task, return_exceptions=True)
        if lo_task is not None:
            await lo_task  # its error, if any, once the chain is settled
        assert result is not None
        self.results_dir.mkdir(parents=True, exist_ok=True)
        saved = {"result": result, "runtimeConfig": runtime_config, "plugins": done}
        self._result_file(container_id).write_text(json.dumps(saved))
        ips = [ip["address"].split("/")[0] for ip in result.get("ips", []) if "." in ip["address"]]
        if not ips:
            raise CNIError(f"CNI ADD gave no IPv4 address: {result}")
        return Attachment(ips[0], result)

    async def delete(self, container_id: str, netns: Path | None) -> None:
        """DEL in reverse order with the saved result; idempotent (no saved result: nothing to do)."""
        path = self._result_file(container_id)
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        ns = str(netns) if netns is not None and await asyncio.to_thread(os.path.exists, netns) else ""
        for plugin in reversed(saved.get("plugins") or self.config.conflist()["plugins"]):  # as they were added
            await self._invoke(plugin, "DEL", container_id, ns, "eth0", saved["result"], saved["runtimeConfig"])
        path.unlink(missing_ok=True)

    def allocated_ips(self) -> list[str]:
        """The addresses host-local has handed out and not freed (its data dir holds one file each)."""
        directory = self.config.state_dir / "networks" / self.config.name
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if p.name[:1].isdigit() and "." in p.name)

    async def remove_bridge(self) -> None:
        """Delete the node's bridge (the bridge plugin never does); for agent uninstall and tests."""
        await run("ip", "link", "delete", self.config.bridge, check=False)


def _plugin_error(exc: CommandError) -> str:
    try:
        err = json.loads(exc.stdout)
        return f"{err.get('msg', '')} {err.get('details', '')}".strip() + f" (code {err.get('code')})"
    except ValueError:
        return str(exc)
