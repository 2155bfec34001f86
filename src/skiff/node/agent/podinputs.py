"""What a pod's sync reads from the API server besides the pod: the inputs of its volumes and containers.

The ConfigMaps and Secrets its volumes and env name, its claims and their PersistentVolumes, the
tokens of its serviceAccountToken projections, the `kubernetes` Service's variables every container
gets, and the auths of its imagePullSecrets. Objects read for one sync are kept `OBJECT_TTL`
seconds (the kubelet's TTL cache strategy), so that the syncs of many pods do not each ask again.
Split from `sync.py`, which decides what to do with a pod; this only gathers what it needs.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

from skiff.api import errors
from skiff.client import Client, ServerUnreachable, resources
from skiff.node.agent.podspec import PodContext, referenced_objects
from skiff.node.agent.tokens import TokenManager
from skiff.node.agent.volumes import VolumeError

if TYPE_CHECKING:
    from skiff.node.agent.sync import NodeFacts

Obj = dict[str, Any]

OBJECT_TTL = 5.0  # how long a ConfigMap, Secret, claim or volume read for a pod's sync is reused


class PodInputs:
    """Reads (and briefly keeps) what the pods of one node reference."""

    def __init__(self, client: Client, node: NodeFacts) -> None:
        self.client = client
        self.node = node
        self.tokens = TokenManager(client)
        self._master_env: tuple[float, dict[str, str]] | None = None
        self._objects: dict[tuple[str, str, str], tuple[float, Obj | None]] = {}

    def forget(self, uid: str) -> None:
        """The pod is gone: its tokens are dropped."""
        self.tokens.forget(uid)

    async def context(self, pod: Obj, pod_ip: str) -> PodContext:
        ns = pod["metadata"]["namespace"]
        cms, secrets = referenced_objects(pod)
        return PodContext(
            configmaps={n: await self._get(resources.CONFIGMAPS, n, ns) for n in sorted(cms)},
            secrets={n: await self._get(resources.SECRETS, n, ns) for n in sorted(secrets)},
            node_name=self.node.name, host_ip=self.node.host_ip, pod_ip=pod_ip,
            node_allocatable=self.node.allocatable, tokens=await self._tokens(pod), claims=await self._claims(pod),
            service_env=await self._service_env(),
        )  # fmt: skip

    async def _tokens(self, pod: Obj) -> dict[str, str]:
        """The tokens of the pod's serviceAccountToken projections, by "<volume>/<source index>"."""
        out: dict[str, str] = {}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            for index, source in enumerate((volume.get("projected") or {}).get("sources") or []):
                sat = source.get("serviceAccountToken")
                if sat is None:
                    continue
                try:
                    out[f"{volume['name']}/{index}"] = await self.tokens.token(
                        pod, audience=sat.get("audience") or "",
                        expiration_seconds=int(sat.get("expirationSeconds") or 3600))  # fmt: skip
                except (errors.StatusError, ServerUnreachable) as e:
                    raise VolumeError(volume["name"], f"failed to fetch token: {e}") from e
        return out

    async def _claims(self, pod: Obj) -> dict[str, tuple[Obj | None, Obj | None]]:
        """Each persistentVolumeClaim volume's claim and, once it is bound, its PersistentVolume."""
        out: dict[str, tuple[Obj | None, Obj | None]] = {}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if name:
                pvc = await self._get(resources.PVCS, name, pod["metadata"]["namespace"])
                bound = ((pvc or {}).get("spec") or {}).get("volumeName")
                out[name] = (pvc, await self._get(resources.PVS, bound, "") if bound else None)
        return out

    async def _service_env(self) -> dict[str, str]:
        """KUBERNETES_SERVICE_HOST/PORT... of the `kubernetes` Service, as the kubelet gives every container."""
        now = time.monotonic()
        if self._master_env is None or now - self._master_env[0] > 60:
            svc = await self._get(resources.SERVICES, "kubernetes", "default")
            self._master_env = (now, master_service_env(svc))
        return self._master_env[1]

    async def _get(self, resource: resources.Resource, name: str, ns: str) -> Obj | None:
        """The object, or None when it does not exist; answers are kept OBJECT_TTL seconds (the kubelet's
        TTL cache strategy), so the pods' syncs do not each ask the API server again."""
        key = (resource.plural, ns, name)
        now = time.monotonic()
        cached = self._objects.get(key)
        if cached is not None and now - cached[0] < OBJECT_TTL:
            return cached[1]
        try:
            obj: Obj | None = await self.client.get(resource, name, namespace=ns)
        except errors.NotFound:
            obj = None
        if len(self._objects) > 4096:
            self._objects = {k: v for k, v in self._objects.items() if now - v[0] < OBJECT_TTL}
        self._objects[key] = (now, obj)
        return obj

    async def credentials(self, pod: Obj) -> Obj | None:
        """The auths of the pod's imagePullSecrets, merged (a dockerconfigjson dict)."""
        auths: Obj = {}
        for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            secret = await self._get(resources.SECRETS, ref.get("name", ""), pod["metadata"]["namespace"])
            data = (secret or {}).get("data") or {}
            for key in (".dockerconfigjson", ".dockercfg"):
                if key in data:
                    doc = json.loads(base64.b64decode(data[key]))
                    auths.update(doc.get("auths", doc))
        return {"auths": auths} if auths else None


def master_service_env(svc: Obj | None) -> dict[str, str]:
    """The `kubernetes` Service's variables (kubelet's getServiceEnvVarMap for the master service)."""
    spec = (svc or {}).get("spec") or {}
    host, ports = spec.get("clusterIP"), spec.get("ports") or []
    if not host or host == "None" or not ports:
        return {}
    port = ports[0]
    number, proto = str(port.get("port")), str(port.get("protocol") or "TCP").lower()
    url = f"{proto}://{host}:{number}"
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": number, "KUBERNETES_PORT": url}
    for p in ports:
        n, pr = str(p.get("port")), str(p.get("protocol") or "TCP")
        if p.get("name"):
            env[f"KUBERNETES_SERVICE_PORT_{str(p['name']).upper().replace('-', '_')}"] = n
        prefix = f"KUBERNETES_PORT_{n}_{pr.upper()}"
        env |= {prefix: f"{pr.lower()}://{host}:{n}", f"{prefix}_PROTO": pr.lower(), f"{prefix}_PORT": n,
                f"{prefix}_ADDR": host}  # fmt: skip
    return env
