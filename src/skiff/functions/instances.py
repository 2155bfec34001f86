"""Function instances: the pod that runs a function, and how it is started, checked and stopped.

An instance is a pod of the generic python runtime image (or the function's own image) running
`skiff.functions.runtime`, its code mounted from the function's ConfigMap. The gateway creates the
pods itself (owned by the Function, so deleting the Function deletes them) and counts one ready
as soon as its runtime answers `/healthz` on the pod IP — it does not wait for the kubelet's next
status report, which keeps the cold start short. `restartPolicy: Never`: an instance that dies is
gone, and the gateway starts another when calls need one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import aiohttp

from skiff.api import quantity
from skiff.functions.crd import CODE_ANNOTATION, FUNCTIONS, LABEL
from skiff.functions.proxy import Connections
from skiff.functions.spec import DEFAULT_MEMORY, FunctionSpec

PORT = 8080
CODE_DIR = "/var/skiff/function"


def runtime_source() -> str:
    return resources.files("skiff.functions").joinpath("runtime.py").read_text()


@dataclass
class Instance:
    pod: str
    ip: str
    token: str = ""  # a warm-pool runtime's load token
    in_flight: int = 0
    dead: bool = False
    started: float = field(default_factory=time.monotonic)
    conns: Connections = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.conns = Connections(self.ip, PORT)

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{PORT}"


class InstanceFailed(Exception):
    """An instance did not become ready (its pod failed, or it did not answer in time)."""


def pod_manifest(
    fn: FunctionSpec, *, image: str, source: str, node_name: str = "", gateway_url: str = ""
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        *([{"name": "SKIFF_GATEWAY", "value": gateway_url}] if gateway_url else []),
        {"name": "SKIFF_FN_NAME", "value": fn.name},
        {"name": "SKIFF_FN_NAMESPACE", "value": fn.namespace},
        {"name": "SKIFF_FN_HANDLER", "value": fn.handler},
        {"name": "SKIFF_FN_TIMEOUT", "value": f"{fn.timeout_seconds:g}"},
        {"name": "SKIFF_FN_CONCURRENCY", "value": str(fn.concurrency)},
        {"name": "SKIFF_FN_PORT", "value": str(PORT)},
        *fn.env,
    ]
    container: dict[str, Any] = {
        "name": "function",
        "image": fn.image or image,
        "imagePullPolicy": "IfNotPresent",  # a cold start must not ask the registry each time
        "terminationMessagePolicy": "FallbackToLogsOnError",  # a load error's last line reaches the status
        "command": ["python3", "-c", source],
        "env": env,
        "ports": [{"containerPort": PORT, "name": "http"}],
        "resources": {"limits": {"memory": DEFAULT_MEMORY}, **fn.resources},
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 2,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    if fn.inline:
        env.append({"name": "SKIFF_FN_SOURCE", "value": fn.inline})
    elif fn.config_map:
        env.append({"name": "SKIFF_FN_CODE_DIR", "value": CODE_DIR})
        container["volumeMounts"] = [{"name": "code", "mountPath": CODE_DIR, "readOnly": True}]
        spec["volumes"] = [{"name": "code", "configMap": {"name": fn.config_map}}]
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{fn.name}-",
            "namespace": fn.namespace,
            "labels": {LABEL: fn.name},
            "annotations": {CODE_ANNOTATION: fn.code_digest},
            "ownerReferences": [
                {
                    "apiVersion": FUNCTIONS.api_version,
                    "kind": FUNCTIONS.kind,
                    "name": fn.name,
                    "uid": fn.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


POOL_LABEL = "functions.skiff.dev/pool"  # on warm-pool pods (their function label is empty until claimed)


def poolable(fn: FunctionSpec) -> bool:
    """Whether a warm-pool runtime can become an instance of `fn`: the generic image, the pool's
    resources, code and env that can be handed over in the load request."""
    res = fn.resources
    plain_env = all("value" in e or "valueFrom" not in e for e in fn.env)
    only_memory = not res.get("requests") and set(res.get("limits") or {}) <= {"memory"}
    return not fn.image and plain_env and only_memory and fn.memory_bytes == int(quantity.parse(DEFAULT_MEMORY))


def pool_manifest(namespace: str, *, image: str, source: str, token: str, node_name: str = "") -> dict[str, Any]:
    """A warm-pool pod: the generic runtime up and listening, no handler loaded yet; only a request
    with `token` may load one."""
    env = [{"name": "SKIFF_FN_POOL", "value": "1"}, {"name": "SKIFF_FN_PORT", "value": str(PORT)},
           {"name": "SKIFF_FN_POOL_TOKEN", "value": token}]  # fmt: skip
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "function",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", source],
                "env": env,
                "ports": [{"containerPort": PORT, "name": "http"}],
                "resources": {"limits": {"memory": DEFAULT_MEMORY}},
            }
        ],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 2,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    if node_name:
        spec["nodeName"] = node_name
    labels = {LABEL: "", POOL_LABEL: "warm"}
    meta = {"generateName": "fn-warm-", "namespace": namespace, "labels": labels}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def load_request(fn: FunctionSpec, files: dict[str, str], *, gateway_url: str = "") -> dict[str, Any]:
    """What a warm-pool runtime needs to become an instance of `fn` (see `skiff.functions.runtime`)."""
    env = {"SKIFF_GATEWAY": gateway_url} if gateway_url else {}
    env.update({e["name"]: e.get("value", "") for e in fn.env})
    env.update(SKIFF_FN_NAME=fn.name, SKIFF_FN_NAMESPACE=fn.namespace)
    body: dict[str, Any] = {"handler": fn.handler, "env": env, "timeout": fn.timeout_seconds,
                            "concurrency": fn.concurrency}  # fmt: skip
    if fn.inline:
        body["source"] = fn.inline
    else:
        body["files"] = files
    return body


def pod_failure(pod: dict[str, Any]) -> str:
    """Why a pod cannot become a working instance, or "" while it still may."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "terminated" in state:
            t = state["terminated"]
            last = next((line for line in reversed(str(t.get("message") or "").splitlines()) if line.strip()), "")
            why = f"container exited with code {t.get('exitCode')} ({t.get('reason') or 'Error'})"
            return f"{why}: {last.strip()}" if last else why
        waiting = (state.get("waiting") or {}).get("reason", "")
        if waiting in ("ErrImagePull", "ImagePullBackOff", "CreateContainerError", "InvalidImageName",
                       "CreateContainerConfigError", "CrashLoopBackOff"):  # fmt: skip
            return f"container waiting: {waiting}: {(state.get('waiting') or {}).get('message', '')}"
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"pod {status.get('phase')}: {status.get('reason') or status.get('message') or ''}".strip()
    return ""


def takeover(pod: dict[str, Any], fn: FunctionSpec | None) -> Instance | None:
    """The instance a pod left by an earlier gateway can be taken over as (its health checked next), or None
    (delete it): a running pool runtime (with its load token), or a running instance of `fn` (the function
    its label names, None when gone) owned by it and running its current code."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    ip = (pod.get("status") or {}).get("podIP", "")
    if not ip or meta.get("deletionTimestamp") or pod_failure(pod):
        return None
    if labels.get(POOL_LABEL) == "warm":
        env = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("env") or []
        token = next((str(e.get("value", "")) for e in env if e.get("name") == "SKIFF_FN_POOL_TOKEN"), "")
        return Instance(str(meta["name"]), ip, token=token) if token else None
    owners = {o.get("uid") for o in meta.get("ownerReferences") or []}
    digest = (meta.get("annotations") or {}).get(CODE_ANNOTATION)
    if fn is None or fn.uid not in owners or fn.code_digest != digest:
        return None
    return Instance(str(meta["name"]), ip)


async def wait_healthy(session: aiohttp.ClientSession, ip: str, *, deadline: float, interval: float = 0.02) -> None:
    """Poll the runtime's /healthz on `ip` until it answers 200 (raises TimeoutError at `deadline`)."""
    url = f"http://{ip}:{PORT}/healthz"
    while True:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                if resp.status == 200:
                    return
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from {url}")
        await asyncio.sleep(interval)
