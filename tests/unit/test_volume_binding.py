"""The scheduler's VolumeBinding plugin, the ServiceAccount admission plugin and token refresh timing."""

from __future__ import annotations

import asyncio
from typing import Any

from skiff.api import pvbinding as pb
from skiff.apiserver.admission_plugins.chain import Attributes
from skiff.apiserver.admission_plugins.service_account import MOUNT_PATH, ServiceAccount
from skiff.apiserver.builtin import builtin_types
from skiff.node.agent.tokens import Token
from skiff.scheduler.framework import Code, CycleState
from skiff.scheduler.plugins.volumebinding import AFFINITY_CONFLICT, UNBOUND_IMMEDIATE, VolumeBinding
from tests.unit.scheduler_objects import framework, node, pod

Obj = dict[str, Any]
WFFC = {"metadata": {"name": "local-path"}, "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer"}  # fmt: skip
IMMEDIATE = {"metadata": {"name": "fast"}, "provisioner": "x", "volumeBindingMode": "Immediate"}


def claim(name: str, cls: str = "local-path", volume: str = "") -> Obj:
    spec: Obj = {"storageClassName": cls, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}  # fmt: skip
    if volume:
        spec["volumeName"] = volume
    return {"metadata": {"name": name, "namespace": "default", "uid": f"u-{name}"}, "spec": spec}


def local_pv(name: str, node_name: str) -> Obj:
    return {"metadata": {"name": name}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": pb.HOSTNAME_LABEL, "operator": "In", "values": [node_name]}]}]}}}}  # fmt: skip


def using(*claims: str) -> Any:
    return pod("p", spec={"volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]})


def plugin() -> tuple[VolumeBinding, Any]:
    fwk, services = framework()
    vb = fwk.plugins["VolumeBinding"]
    assert isinstance(vb, VolumeBinding)
    services.storage.classes = {"local-path": WFFC, "fast": IMMEDIATE}
    return vb, services


def test_pods_without_claims_are_skipped() -> None:
    vb, _ = plugin()
    status = vb.pre_filter(CycleState(), pod("p"))
    assert status is not None and status.code == Code.SKIP


def test_missing_and_unbound_immediate_claims_are_unschedulable() -> None:
    vb, services = plugin()
    status = vb.pre_filter(CycleState(), using("gone"))
    assert status is not None and status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert status.reasons == ('persistentvolumeclaim "gone" not found',)
    services.storage.claims["default/imm"] = claim("imm", cls="fast")
    status = vb.pre_filter(CycleState(), using("imm"))
    assert status is not None and status.reasons == (UNBOUND_IMMEDIATE,)


def test_bound_volumes_pin_the_node_and_delayed_claims_get_it() -> None:
    vb, services = plugin()
    services.storage.claims["default/old"] = claim("old", volume="pv-old")
    services.storage.pvs["pv-old"] = local_pv("pv-old", "n1")
    services.storage.claims["default/new"] = claim("new")
    state = CycleState()
    assert vb.pre_filter(state, using("old", "new")) is None
    assert vb.filter(state, using("old", "new"), node("n1")) is None
    status = vb.filter(state, using("old", "new"), node("n2"))
    assert status is not None and status.reasons == (AFFINITY_CONFLICT,)
    assert asyncio.run(vb.pre_bind(state, using("old", "new"), "n1")) is None
    assert services.annotated == [("default", "new", {pb.SELECTED_NODE: "n1"})]


def admit(plugin: ServiceAccount, spec: Obj) -> Obj:
    rt = next(r for r in builtin_types() if r.plural == "pods")
    obj = {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}
    asyncio.run(plugin.admit(Attributes("CREATE", rt, obj)))
    return obj["spec"]


class Accounts:
    def __init__(self, **accounts: Obj) -> None:
        self.accounts = accounts

    async def get(self, namespace: str, name: str) -> Obj | None:
        return self.accounts.get(name)


def test_service_account_admission_mounts_the_api_access_volume() -> None:
    sa = ServiceAccount(Accounts(default={"metadata": {"name": "default"}, "imagePullSecrets": [{"name": "reg"}]}))
    spec = admit(sa, {"containers": [{"name": "a"}], "initContainers": [{"name": "i"}]})
    assert spec["serviceAccountName"] == "default"
    assert spec["imagePullSecrets"] == [{"name": "reg"}]
    [volume] = spec["volumes"]
    assert volume["name"].startswith("kube-api-access-") and len(volume["name"]) == len("kube-api-access-") + 5
    sources = volume["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    for c in (*spec["containers"], *spec["initContainers"]):
        assert c["volumeMounts"] == [{"name": volume["name"], "readOnly": True, "mountPath": MOUNT_PATH}]


def test_service_account_admission_honours_automount_false() -> None:
    off = ServiceAccount(Accounts(robot={"metadata": {"name": "robot"}, "automountServiceAccountToken": False}))
    assert "volumes" not in admit(off, {"serviceAccountName": "robot", "containers": [{"name": "a"}]})
    assert "volumes" not in admit(off, {"automountServiceAccountToken": False, "containers": [{"name": "a"}]})
    pod_says_yes = admit(off, {"serviceAccountName": "robot", "automountServiceAccountToken": True,
                               "containers": [{"name": "a"}]})  # fmt: skip
    assert len(pod_says_yes["volumes"]) == 1
    own = {"containers": [{"name": "a", "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}]}
    assert "volumes" not in admit(off, own)  # something is mounted there already


def test_tokens_are_refreshed_at_80_percent_of_their_life() -> None:
    token = Token("t", fetched=1000.0, expires=1000.0 + 3600)
    assert not token.needs_refresh(1000.0 + 0.79 * 3600)
    assert token.needs_refresh(1000.0 + 0.8 * 3600)
