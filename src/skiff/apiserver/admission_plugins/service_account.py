"""The ServiceAccount admission plugin: every pod runs as an account, and may get its API credentials.

As Kubernetes' `plugin/pkg/admission/serviceaccount`: on pod create (mirror
pods aside) an empty `serviceAccountName` becomes `default`; the account's
`imagePullSecrets` are copied when the pod has none; and unless the pod
(or else its account) says `automountServiceAccountToken: false`, the pod
gets the projected volume `kube-api-access-<5 chars>` — a bound token
(3607 s, refreshed by the node agent), `ca.crt` from the `kube-root-ca.crt`
ConfigMap and the namespace — mounted read-only at
/var/run/secrets/kubernetes.io/serviceaccount in every container that has
nothing mounted there yet. An account that does not exist (yet) is taken as
one with defaults: the default account appears a moment after its namespace.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from skiff.apiserver.admission_plugins.chain import Attributes, Plugin

Obj = dict[str, Any]

DEFAULT_ACCOUNT = "default"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_EXPIRATION = 3607  # Kubernetes' warnOnlyBoundTokenExpirationSeconds
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand: no vowels, no 0/1/3


class Accounts(Protocol):
    async def get(self, namespace: str, name: str) -> Obj | None: ...


def api_access_volume(name: str) -> Obj:
    """The projected volume Kubernetes adds (TokenVolumeSource + root CA + namespace)."""
    return {
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }  # fmt: skip


def mount_api_access(spec: Obj, suffix: str) -> None:
    """Add the kube-api-access volume and its mounts to `spec` (nothing if a container mounts the path)."""
    groups = [spec.get(g) or [] for g in ("initContainers", "containers", "ephemeralContainers")]
    containers = [c for group in groups for c in group if isinstance(c, dict)]
    if any(m.get("mountPath") == MOUNT_PATH for c in containers for m in c.get("volumeMounts") or []):
        return
    volumes = spec.get("volumes")
    volumes = volumes if isinstance(volumes, list) else []
    taken = {v.get("name") for v in volumes if isinstance(v, dict)}
    name = VOLUME_PREFIX + suffix
    while name in taken:
        name = VOLUME_PREFIX + random_suffix()
    spec["volumes"] = [*volumes, api_access_volume(name)]
    for c in containers:
        mounts = c.get("volumeMounts")
        c["volumeMounts"] = [*(mounts if isinstance(mounts, list) else []),
                             {"name": name, "readOnly": True, "mountPath": MOUNT_PATH}]  # fmt: skip


def random_suffix() -> str:
    """Five characters, as Kubernetes' `utilrand.String(5)` (not a secret: one draw, not five)."""
    return "".join(random.choices(_ALPHANUMS, k=5))


def automount(spec: Obj, account: Obj | None) -> bool:
    if isinstance(spec.get("automountServiceAccountToken"), bool):
        return bool(spec["automountServiceAccountToken"])
    if account is not None and isinstance(account.get("automountServiceAccountToken"), bool):
        return bool(account["automountServiceAccountToken"])
    return True


class ServiceAccount(Plugin):
    name = "ServiceAccount"
    resources = frozenset({("", "pods")})

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def admit(self, attrs: Attributes) -> None:
        if attrs.operation != "CREATE":
            return
        spec = attrs.obj.get("spec")
        meta = attrs.obj.get("metadata") or {}
        if not isinstance(spec, dict) or MIRROR_ANNOTATION in (meta.get("annotations") or {}):
            return
        name = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_ACCOUNT
        spec["serviceAccountName"] = name
        account = await self.accounts.get(str(meta.get("namespace") or "default"), str(name))
        if account is not None and not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
            spec["imagePullSecrets"] = [{"name": s.get("name", "")} for s in account["imagePullSecrets"]]
        if automount(spec, account):
            mount_api_access(spec, random_suffix())
