"""A pod's container spec → the runtime's `ContainerConfig`. Pure logic, as the kubelet's
`kuberuntime_container.go` / `kubelet_pods.go` (`makeEnvironmentVariables`, `ExpandContainerCommandAndArgs`).

What the process runs: `command` replaces the image's ENTRYPOINT (and then its CMD is ignored),
`args` replaces its CMD. Environment: the image's, then `envFrom` in order, then `env` in order
(later wins); each `env` value may use `$(VAR)` of the variables defined before it, `$$` is a
literal `$`, and an unknown `$(VAR)` stays as written. ConfigMaps and Secrets are fetched by the
caller (`referenced_objects` says which) and handed in: a missing one (not `optional`) is a
`ContainerConfigError` carrying Kubernetes' message, shown as `CreateContainerConfigError`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from skiff.api import quantity
from skiff.images.model import ImageConfig
from skiff.node.runtime.types import ContainerConfig, Mount, PortMapping, Resources, SandboxConfig

Obj = dict[str, Any]


class ContainerConfigError(Exception):
    """The container cannot be configured (a missing ConfigMap, Secret or key): CreateContainerConfigError."""


@dataclass(frozen=True)
class PodContext:
    """What a container's configuration may read besides its spec: referenced objects, node and IPs."""

    configmaps: Mapping[str, Obj | None] = field(default_factory=dict)  # name -> object, None when missing
    secrets: Mapping[str, Obj | None] = field(default_factory=dict)
    node_name: str = ""
    host_ip: str = ""
    pod_ip: str = ""
    node_allocatable: Mapping[str, str] = field(default_factory=dict)
    # serviceAccountToken projections: "<volume>/<source index>" -> the token (fetched by the caller)
    tokens: Mapping[str, str] = field(default_factory=dict)
    # persistentVolumeClaim volumes: claim name -> (the claim, its bound volume), None when missing
    claims: Mapping[str, tuple[Obj | None, Obj | None]] = field(default_factory=dict)
    # the variables every container gets before its own (KUBERNETES_SERVICE_HOST...)
    service_env: Mapping[str, str] = field(default_factory=dict)


def referenced_objects(pod: Obj) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets a pod's env, envFrom and volumes refer to."""
    spec = pod.get("spec") or {}
    cms: set[str] = set()
    secrets: set[str] = set()
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                cms.add(src["configMapRef"].get("name", ""))
            if "secretRef" in src:
                secrets.add(src["secretRef"].get("name", ""))
        for env in c.get("env") or []:
            vf = env.get("valueFrom") or {}
            if "configMapKeyRef" in vf:
                cms.add(vf["configMapKeyRef"].get("name", ""))
            if "secretKeyRef" in vf:
                secrets.add(vf["secretKeyRef"].get("name", ""))
    for vol in spec.get("volumes") or []:
        if "configMap" in vol:
            cms.add(vol["configMap"].get("name", ""))
        if "secret" in vol:
            secrets.add(vol["secret"].get("secretName", ""))
        for source in (vol.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                cms.add(source["configMap"].get("name", ""))
            if "secret" in source:
                secrets.add(source["secret"].get("name", ""))
    return cms - {""}, secrets - {""}


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known names replaced, `$$` → `$`, the rest left as written."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end == -1:
                    out.append(text[i:])
                    break
                name = text[i + 2 : end]
                out.append(env[name] if name in env else text[i : end + 1])
                i = end + 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def secret_value(secret: Obj, key: str) -> str | None:
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode("utf-8", "replace")
    string_data = secret.get("stringData") or {}
    return string_data.get(key)


def object_data(kind: str, obj: Obj) -> dict[str, str]:
    """The keys of a ConfigMap (data and binaryData) or Secret (decoded), as text."""
    if kind == "Secret":
        keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
        return {k: secret_value(obj, k) or "" for k in sorted(keys)}
    out = dict(obj.get("data") or {})
    for k, v in (obj.get("binaryData") or {}).items():
        out[k] = base64.b64decode(v).decode("utf-8", "replace")
    return out


def field_value(pod: Obj, path: str, ctx: PodContext) -> str:
    """A `fieldRef.fieldPath` of the pod (downward API)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((meta.get(source) or {}).get(path[len(prefix) + 2 : -2], ""))
        if path == prefix:
            items = sorted((meta.get(source) or {}).items())
            return "\n".join(f'{k}="{v}"' for k, v in items)
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or ctx.node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": ctx.host_ip,
        "status.hostIPs": ctx.host_ip,
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
    }
    if path not in simple:
        raise ContainerConfigError(f"unsupported fieldPath: {path}")
    return str(simple[path] or "")


def resource_value(pod: Obj, ref: Obj, ctx: PodContext, default_container: str = "") -> str:
    """A `resourceFieldRef`: the container's request or limit (limits default to the node's allocatable),
    divided by `divisor` and rounded up, as the kubelet's `ExtractContainerResourceValue`."""
    name = ref.get("containerName") or default_container
    resource = ref.get("resource", "")
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    container = next((c for c in containers if c.get("name") == name), None)
    if container is None:
        raise ContainerConfigError(f"container {name!r} of resourceFieldRef not found")
    kind, _, res = resource.partition(".")
    values = (container.get("resources") or {}).get(kind) or {}
    raw = values.get(res)
    if raw is None and kind == "limits":
        raw = ctx.node_allocatable.get(res)
    amount = quantity.parse(raw) if raw is not None else Fraction(0)
    divisor = quantity.parse(ref.get("divisor") or "1")
    if divisor == 0:
        raise ContainerConfigError("resourceFieldRef divisor must not be zero")
    return str(math.ceil(amount / divisor))


def _lookup(kind: str, objs: Mapping[str, Obj | None], name: str) -> Obj | None:
    return objs.get(name)


def _not_found(kind: str, name: str) -> ContainerConfigError:
    return ContainerConfigError(f'{kind.lower()} "{name}" not found')


def container_env(pod: Obj, container: Obj, ctx: PodContext) -> dict[str, str]:
    """The container's own variables (envFrom, then env), resolved and expanded, in order."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for kind, key, objs in (("ConfigMap", "configMapRef", ctx.configmaps), ("Secret", "secretRef", ctx.secrets)):
            if key not in src:
                continue
            ref = src[key]
            obj = _lookup(kind, objs, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise _not_found(kind, ref.get("name", ""))
            for k, v in object_data(kind, obj).items():
                env[prefix + k] = v
    for item in container.get("env") or []:
        name = item.get("name", "")
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        vf = item["valueFrom"] or {}
        if "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"].get("fieldPath", ""), ctx)
        elif "resourceFieldRef" in vf:
            env[name] = resource_value(pod, vf["resourceFieldRef"], ctx, container.get("name", ""))
        else:
            refs = (("ConfigMap", "configMapKeyRef", ctx.configmaps), ("Secret", "secretKeyRef", ctx.secrets))
            for kind, key, objs in refs:
                if key not in vf:
                    continue
                ref = vf[key]
                obj = _lookup(kind, objs, ref.get("name", ""))
                optional = bool(ref.get("optional"))
                if obj is None:
                    if optional:
                        break
                    raise _not_found(kind, ref.get("name", ""))
                value = object_data(kind, obj).get(ref.get("key", ""))
                if value is None:
                    if optional:
                        break
                    missing = ref.get("key", "")
                    raise ContainerConfigError(f"couldn't find key {missing} in {kind} {ns}/{ref.get('name', '')}")
                env[name] = value
    return env


def command_line(container: Obj, image: ImageConfig, env: Mapping[str, str]) -> list[str]:
    """Kubernetes' rules: `command` replaces ENTRYPOINT and drops CMD; `args` replaces CMD; `$(VAR)` expanded."""
    command = [expand(str(a), env) for a in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    if command:
        return command + args
    return list(image.entrypoint) + (args if container.get("args") else list(image.cmd))


def resolve_user(user: str, passwd: str = "", group: str = "") -> tuple[int, int]:
    """An image's USER (`uid`, `uid:gid`, `name`, `name:group`) as numbers, names looked up in its files."""
    name, _, grp = user.partition(":")
    uid, gid = 0, 0
    if name.isdigit():
        uid = int(name)
        gid = next((int(f[3]) for f in _rows(passwd) if len(f) > 3 and f[2] == name and f[3].isdigit()), 0)
    elif name:
        row = next((f for f in _rows(passwd) if f[0] == name), None)
        if row is None or len(row) < 4:
            raise ContainerConfigError(f"unable to find user {name}: no matching entries in passwd file")
        uid, gid = int(row[2]), int(row[3])
    if grp.isdigit():
        gid = int(grp)
    elif grp:
        grow = next((f for f in _rows(group) if f[0] == grp), None)
        if grow is None or len(grow) < 3:
            raise ContainerConfigError(f"unable to find group {grp}: no matching entries in group file")
        gid = int(grow[2])
    return uid, gid


def _rows(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def format_pod(pod: Obj) -> str:
    """A pod as the kubelet's messages name it: `name_namespace(uid)`."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name', '')}_{meta.get('namespace', '')}({meta.get('uid', '')})"


def verify_run_as_non_root(pod: Obj, container: Obj, image_user: str) -> None:
    """runAsNonRoot (the container's, else the pod's) as the kubelet's `verifyRunAsNonRoot` checks it:
    an explicit runAsUser must not be 0; otherwise the image's USER must be a number other than 0
    (an image without USER runs as root; a user name cannot be verified)."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = container.get("securityContext") or {}
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        return
    where = f'(pod: "{format_pod(pod)}", container: {container.get("name", "")})'
    run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if run_as_user is not None:
        if int(run_as_user) == 0:
            raise ContainerConfigError(f"container's runAsUser breaks non-root policy {where}")
        return
    user = image_user.partition(":")[0]
    if not user or user == "0":
        raise ContainerConfigError(f"container has runAsNonRoot and image will run as root {where}")
    if not user.isdigit():
        raise ContainerConfigError(
            f"container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root "
            f"{where}"
        )


def resources(container: Obj) -> Resources:
    res = container.get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    cpu_limit = quantity.milli_value(limits["cpu"]) if "cpu" in limits else None
    cpu_request = quantity.milli_value(requests["cpu"]) if "cpu" in requests else cpu_limit
    memory = quantity.value(limits["memory"]) if "memory" in limits else None
    return Resources(cpu_request_milli=cpu_request, cpu_limit_milli=cpu_limit, memory_limit_bytes=memory)


def build_config(
    pod: Obj,
    container: Obj,
    image: ImageConfig,
    ctx: PodContext,
    *,
    mounts: list[Mount],
    attempt: int = 0,
    passwd: str = "",
    group: str = "",
) -> ContainerConfig:
    """The whole `ContainerConfig` of one container of `pod`, run from an image with settings `image`."""
    own = container_env(pod, container, ctx)
    env = image.env_dict() | dict(ctx.service_env) | own
    args = command_line(container, image, own)
    if not args:
        raise ContainerConfigError(f"no command specified for container {container.get('name', '')!r}")
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = container.get("securityContext") or {}
    verify_run_as_non_root(pod, container, image.user)
    uid, gid = resolve_user(image.user, passwd, group) if image.user else (0, 0)
    run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    run_as_group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if run_as_user is not None:
        uid = int(run_as_user)
        if run_as_group is None:
            gid = next((int(f[3]) for f in _rows(passwd) if len(f) > 3 and f[2] == str(uid) and f[3].isdigit()), gid)
    if run_as_group is not None:
        gid = int(run_as_group)
    groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    caps = sc.get("capabilities") or {}
    return ContainerConfig(
        name=container.get("name", ""),
        args=args,
        env=env,
        cwd=container.get("workingDir") or image.working_dir or "/",
        uid=uid,
        gid=gid,
        additional_gids=groups,
        tty=bool(container.get("tty")),
        stdin=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdinOnce")),
        mounts=mounts,
        readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
        cap_add=list(caps.get("add") or []),
        cap_drop=list(caps.get("drop") or []),
        privileged=bool(sc.get("privileged")),
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        resources=resources(container),
        attempt=attempt,
    )


def pull_policy(container: Obj) -> str:
    """imagePullPolicy, defaulted as the API server does (Always for `:latest` or no tag)."""
    policy = container.get("imagePullPolicy")
    if policy:
        return str(policy)
    image = str(container.get("image") or "")
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    return "Always" if ":" not in last or last.endswith(":latest") else "IfNotPresent"


def sandbox_config(pod: Obj) -> SandboxConfig:
    """The pod-level settings of its sandbox: hostname, subdomain, hostAliases, hostPorts."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    ports = [
        PortMapping(host_port=int(p["hostPort"]), container_port=int(p["containerPort"]),
                    protocol=str(p.get("protocol") or "TCP").lower(), host_ip=p.get("hostIP") or "")  # type: ignore[arg-type]
        for c in spec.get("containers") or [] for p in c.get("ports") or [] if p.get("hostPort")
    ]  # fmt: skip
    aliases = [(a.get("ip", ""), list(a.get("hostnames") or [])) for a in spec.get("hostAliases") or []]
    return SandboxConfig(uid=meta["uid"], name=meta["name"], namespace=meta["namespace"],
                         hostname=spec.get("hostname", ""), subdomain=spec.get("subdomain", ""),
                         host_aliases=aliases, port_mappings=ports)  # fmt: skip
