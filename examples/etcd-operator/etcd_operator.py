"""An operator for etcd clusters, written with kopf: the EtcdCluster kind (crd.yaml) made real.

For each EtcdCluster it runs `spec.size` etcd members as pods named <cluster>-<n> (the member
names), a client Service <cluster> and a headless Service <cluster>-peers; it grows and shrinks
the cluster one member at a time through etcd's member API; it saves snapshots on
`spec.backup.schedule` into a volume (a PersistentVolumeClaim, or a hostPath until the cluster has
a provisioner); and when more than half of the members are lost it restores a one-member cluster
from the latest snapshot and grows it back. Everything it does shows in the EtcdCluster's status
conditions (Available, Restoring, BackupSucceeded) and in events.

How a member starts: its pod runs a small shell script (MEMBER_SCRIPT) that waits until the
operator has written the cluster to join into the pod's annotations (a downward API volume shows
them as files). The operator needs the pod's IP for the member's peer URL, so the order is:
create the pod, read its IP, `member add` (for a new cluster: nothing, all members start at
once), annotate the pod, and the script starts etcd (after `snapshot restore` when the
annotation names a snapshot).

Run it with `kopf run --standalone --all-namespaces etcd_operator.py` (out of the cluster, with a
kubeconfig) or as the Deployment of deploy.yaml. Settings come from the environment:
ETCD_OPERATOR_INTERVAL (seconds between reconciliations, default 2) and ETCD_IMAGE (the image
repository of the members, default `etcd`; the tag is `spec.version`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import re
from typing import Any

import aiohttp
import kopf

GROUP, VERSION, PLURAL = "etcd.skiff.dev", "v1alpha1", "etcdclusters"
LABEL_CLUSTER = "etcd.skiff.dev/cluster"
LABEL_ROLE = "etcd.skiff.dev/role"
ANNOTATION = "etcd.skiff.dev/"  # + initial-cluster, initial-cluster-state, initial-cluster-token, restore-snapshot
INTERVAL = float(os.environ.get("ETCD_OPERATOR_INTERVAL", "2"))
IMAGE = os.environ.get("ETCD_IMAGE", "etcd")
POD_START_TIMEOUT = float(os.environ.get("ETCD_OPERATOR_POD_TIMEOUT", "90"))
CLIENT_PORT, PEER_PORT = 2379, 2380

Obj = dict[str, Any]

MEMBER_SCRIPT = r"""
set -eu
unset ETCD_DATA_DIR  # etcd refuses a flag that an environment variable also sets
conf=/etc/etcd-member
echo "member $POD_NAME at $POD_IP: waiting for the operator to say which cluster to join"
trap 'exit 0' TERM  # the shell is the container's first process: without a trap it would ignore SIGTERM
until [ -s $conf/initial-cluster ]; do sleep 0.2; done
trap - TERM
data=/var/lib/etcd/data
if [ ! -d $data/member ]; then
  snapshot=$(cat $conf/restore-snapshot)
  if [ -n "$snapshot" ]; then
    echo "restoring /backups/$snapshot"
    if command -v etcdutl >/dev/null; then restore="etcdutl"; else restore="etcdctl"; fi
    rm -rf $data.restoring
    ETCDCTL_API=3 $restore snapshot restore "/backups/$snapshot" --name "$POD_NAME" \
      --initial-cluster "$(cat $conf/initial-cluster)" --initial-cluster-token "$(cat $conf/initial-cluster-token)" \
      --initial-advertise-peer-urls "http://$POD_IP:2380" --data-dir $data.restoring
    mv $data.restoring $data
  fi
fi
exec etcd --name "$POD_NAME" --data-dir $data \
  --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls "http://$POD_IP:2379" \
  --listen-peer-urls http://0.0.0.0:2380 --initial-advertise-peer-urls "http://$POD_IP:2380" \
  --initial-cluster "$(cat $conf/initial-cluster)" --initial-cluster-state "$(cat $conf/initial-cluster-state)" \
  --initial-cluster-token "$(cat $conf/initial-cluster-token)"
"""

BACKUP_SCRIPT = r"""
set -eu
ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINT" --dial-timeout=5s --command-timeout=60s \
  snapshot save "/backups/$SNAPSHOT"
cd /backups
ls -1 "$CLUSTER"-*.db | sort -r | tail -n +$((KEEP + 1)) | while read old; do echo "pruning $old"; rm -f "$old"; done
"""


# --- talking to the API server -----------------------------------------------------------------

def connection_info(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """In a pod: the service account and KUBERNETES_SERVICE_HOST; elsewhere: the kubeconfig."""
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if host and os.path.exists(f"{sa}/token"):
        with open(f"{sa}/token") as f:
            token = f.read().strip()
        with open(f"{sa}/namespace") as f:
            namespace = f.read().strip()
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        return kopf.ConnectionInfo(
            server=f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}",
            ca_path=f"{sa}/ca.crt", token=token, default_namespace=namespace,
        )
    return kopf.login_with_kubeconfig(settings=settings)


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    return connection_info(settings)


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body.get('message') if isinstance(body, dict) else body}")
        self.status = status


class Kube:
    """Just enough of a Kubernetes client: JSON requests with the operator's credentials."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.server = ""

    async def request(self, method: str, path: str, body: Any = None, *, patch: bool = False) -> Any:
        if self.session is None or self.session.closed:
            info = connection_info(kopf.OperatorSettings())
            if info is None:
                raise kopf.TemporaryError("no credentials for the API server", delay=5)
            self.server = info.server.rstrip("/")
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()), headers=info.as_http_headers(),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        headers = {"Content-Type": "application/merge-patch+json"} if patch else {}
        async with self.session.request(method, self.server + path, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status == 401:  # a rotated token: log in again next time
                await self.session.close()
            if resp.status >= 400:
                raise ApiError(resp.status, data)
            return data

    async def get(self, path: str) -> Obj | None:
        try:
            found: Obj = await self.request("GET", path)
            return found
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create(self, path: str, obj: Obj) -> None:
        try:
            await self.request("POST", path, obj)
        except ApiError as e:
            if e.status != 409:
                raise

    async def delete(self, path: str, grace: int | None = None) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace} if grace is not None else None
        try:
            await self.request("DELETE", path, body)
        except ApiError as e:
            if e.status != 404:
                raise


kube = Kube()


def pods_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/pods" + (f"/{name}" if name else "")


def cluster_path(ns: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/{name}"


# --- talking to etcd (its JSON gateway, /v3/...) ------------------------------------------------

_etcd: aiohttp.ClientSession | None = None


async def etcd(ip: str, call: str, body: Obj | None = None, wait: float = 3.0) -> Obj:
    global _etcd
    if _etcd is None or _etcd.closed:
        _etcd = aiohttp.ClientSession()
    url = f"http://{ip}:{CLIENT_PORT}{call}"
    method = "GET" if body is None else "POST"
    async with _etcd.request(method, url, json=body, timeout=aiohttp.ClientTimeout(total=wait)) as resp:
        data: Obj = await resp.json(content_type=None)
        if resp.status >= 400 or "error" in data:
            raise RuntimeError(f"etcd {ip}{call}: {resp.status} {data}")
        return data


async def healthy(ip: str) -> bool:
    try:
        return (await etcd(ip, "/health", wait=1.5)).get("health") in ("true", True)
    except (TimeoutError, OSError, RuntimeError, ValueError, aiohttp.ClientError):
        return False


# --- schedules ---------------------------------------------------------------------------------

_EVERY = re.compile(r"^@every\s+((?:\d+(?:\.\d+)?(?:h|m|s|ms))+)$")
_SHORTCUTS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
              "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}  # fmt: skip


def _cron_field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            start, end = low, high
        elif "-" in rng:
            start, end = (int(x) for x in rng.split("-", 1))
        else:
            start = end = int(rng)
            if step:
                end = high
        values.update(range(start, end + 1, int(step or 1)))
    return values


def next_run(schedule: str, after: datetime.datetime) -> datetime.datetime:
    """The first time after `after` that `schedule` (cron, @hourly..., or Go's `@every 1m30s`) names."""
    schedule = schedule.strip()
    every = _EVERY.match(schedule)
    if every:
        units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        seconds = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", every.group(1)))
        return after + datetime.timedelta(seconds=max(seconds, 1.0))
    fields = _SHORTCUTS.get(schedule, schedule).split()
    if len(fields) != 5:
        raise ValueError(f"backup schedule {schedule!r} is neither a cron expression nor '@every <duration>'")
    minutes, hours, days, months, weekdays = (
        _cron_field(f, lo, hi) for f, (lo, hi) in zip(fields, [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)], strict=True)
    )
    if 7 in weekdays:
        weekdays.add(0)
    t = after.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    for _ in range(366 * 24 * 60):
        if (t.minute in minutes and t.hour in hours and t.month in months
                and t.day in days and (t.isoweekday() % 7) in weekdays):  # fmt: skip
            return t
        t += datetime.timedelta(minutes=1)
    raise ValueError(f"backup schedule {schedule!r} never fires")


# --- status ------------------------------------------------------------------------------------

def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def rfc3339(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC) if text else None


class Cluster:
    """One EtcdCluster as this reconciliation sees it, and the status it will write."""

    def __init__(self, body: Obj, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self.body = body
        self.logger = logger
        self.name: str = body["metadata"]["name"]
        self.ns: str = body["metadata"]["namespace"]
        self.spec: Obj = body.get("spec") or {}
        self.status: Obj = dict(body.get("status") or {})
        self.size = int(self.spec.get("size", 3))
        self.image = f"{IMAGE}:{self.spec.get('version', '3.4.23')}"
        self.backup: Obj = self.spec.get("backup") or {}

    # status, written at once so that kubectl and the tests see each step
    async def update_status(self, **fields: Any) -> None:
        self.status.update(fields)
        self.status["observedGeneration"] = self.body["metadata"].get("generation")
        self.status["selector"] = f"{LABEL_CLUSTER}={self.name},{LABEL_ROLE}=member"
        await kube.request("PATCH", cluster_path(self.ns, self.name) + "/status", {"status": self.status}, patch=True)

    def condition(self, type_: str) -> Obj:
        return next((c for c in self.status.get("conditions") or [] if c.get("type") == type_), {})

    async def set_condition(self, type_: str, status: bool, reason: str, message: str, **fields: Any) -> None:
        value = "True" if status else "False"
        old = self.condition(type_)
        cond = {"type": type_, "status": value, "reason": reason, "message": message,
                "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == value else rfc3339(now()),
                "observedGeneration": self.body["metadata"].get("generation")}  # fmt: skip
        if old == cond and not fields:
            return
        others = [c for c in self.status.get("conditions") or [] if c.get("type") != type_]
        await self.update_status(conditions=[*others, cond], **fields)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.logger.info(f"{reason}: {message}")
        kopf.event(self.body, type=type_, reason=reason, message=message)

    # --- the objects of the cluster
    def labels(self, role: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": self.name,
                "app.kubernetes.io/managed-by": "etcd-operator",
                LABEL_CLUSTER: self.name, LABEL_ROLE: role}  # fmt: skip

    def backup_volume(self) -> Obj:
        storage = self.backup.get("storage") or {}
        if storage.get("type", "PersistentVolumeClaim") == "HostPath":
            path = storage.get("hostPath") or "/var/lib/etcd-backups"
            return {"name": "backups", "hostPath": {"path": f"{path}/{self.ns}/{self.name}",
                                                    "type": "DirectoryOrCreate"}}  # fmt: skip
        return {"name": "backups", "persistentVolumeClaim": {"claimName": f"{self.name}-backups"}}

    async def ensure_objects(self) -> None:
        ns = self.ns
        selector = {LABEL_CLUSTER: self.name, LABEL_ROLE: "member"}
        client = {"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": self.name, "labels": self.labels("client")},
                  "spec": {"selector": selector, "ports": [{"name": "client", "port": CLIENT_PORT}]}}  # fmt: skip
        peers = {"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": f"{self.name}-peers", "labels": self.labels("peers")},
                 "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector,
                          "ports": [{"name": "client", "port": CLIENT_PORT},
                                    {"name": "peer", "port": PEER_PORT}]}}  # fmt: skip
        objects = [(f"/api/v1/namespaces/{ns}/services", client), (f"/api/v1/namespaces/{ns}/services", peers)]
        storage = self.backup.get("storage") or {}
        if storage.get("type", "PersistentVolumeClaim") == "PersistentVolumeClaim":
            claim_spec: Obj = {"accessModes": ["ReadWriteOnce"],
                               "resources": {"requests": {"storage": storage.get("size", "1Gi")}}}  # fmt: skip
            if storage.get("storageClassName"):
                claim_spec["storageClassName"] = storage["storageClassName"]
            claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "spec": claim_spec,
                     "metadata": {"name": f"{self.name}-backups", "labels": self.labels("backups")}}  # fmt: skip
            objects.append((f"/api/v1/namespaces/{ns}/persistentvolumeclaims", claim))  # kept: no owner reference
        for path, obj in objects:
            if obj["kind"] != "PersistentVolumeClaim":
                kopf.adopt(obj, owner=self.body)
            if await kube.get(f"{path}/{obj['metadata']['name']}") is None:
                await kube.create(path, obj)

    def member_pod(self, name: str, *, restoring: bool = False) -> Obj:
        """A member's pod; the one restoring a snapshot also mounts the backups (a ReadWriteOnce claim
        would otherwise pin every member to the node of its volume)."""
        keys = ("initial-cluster", "initial-cluster-state", "initial-cluster-token", "restore-snapshot")
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {**self.labels("member"), "etcd.skiff.dev/member": name}},
            "spec": {
                "hostname": name, "subdomain": f"{self.name}-peers", "terminationGracePeriodSeconds": 10,
                "containers": [{
                    "name": "etcd", "image": self.image, "command": ["sh", "-c", MEMBER_SCRIPT],
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [{"name": "client", "containerPort": CLIENT_PORT},
                              {"name": "peer", "containerPort": PEER_PORT}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": CLIENT_PORT}, "periodSeconds": 2},
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/etcd"},
                                     {"name": "member", "mountPath": "/etc/etcd-member"}],
                }],
                "volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "member", "downwardAPI": {"items": [
                        {"path": key, "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION}{key}']"}}
                        for key in keys]}},
                ],
            },
        }  # fmt: skip
        if restoring:
            pod["spec"]["volumes"].append(self.backup_volume())
            pod["spec"]["containers"][0]["volumeMounts"].append({"name": "backups", "mountPath": "/backups"})
        kopf.adopt(pod, owner=self.body)
        return pod

    async def pods(self, role: str) -> list[Obj]:
        sel = f"{LABEL_CLUSTER}={self.name},{LABEL_ROLE}={role}"
        found: list[Obj] = (await kube.request("GET", pods_path(self.ns) + f"?labelSelector={sel}"))["items"]
        return sorted(found, key=lambda p: member_index(p["metadata"]["name"]))


def member_index(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


def pod_ip(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("podIP") or "")


FAILING = ("CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError")


def gone(pod: Obj | None) -> bool:
    """A pod that will not come back: missing, being deleted, or finished."""
    return (pod is None or bool(pod["metadata"].get("deletionTimestamp"))
            or (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"))  # fmt: skip


def failing(pod: Obj | None) -> bool:
    """Gone, or its etcd container keeps failing (the kubelet backs off restarting it)."""
    if gone(pod):
        return True
    assert pod is not None
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return any(((s.get("state") or {}).get("waiting") or {}).get("reason") in FAILING for s in statuses)


# --- reconciliation ----------------------------------------------------------------------------

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # only the events this operator posts itself, not kopf's log lines
    settings.persistence.finalizer = "etcd.skiff.dev/operator"


@kopf.on.cleanup()
async def close_sessions(**_: Any) -> None:
    for session in (kube.session, _etcd):
        if session is not None:
            await session.close()


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, backoff=INTERVAL)
async def reconcile(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    """Level-triggered: look at the members' pods and etcd, do the next step, write status."""
    fresh = await kube.get(cluster_path(body["metadata"]["namespace"], body["metadata"]["name"]))
    if fresh is None or fresh["metadata"].get("deletionTimestamp"):
        return
    c = Cluster(fresh, logger)
    await c.ensure_objects()
    await check_backup(c)
    pods = {p["metadata"]["name"]: p for p in await c.pods("member")}
    ips = {name: pod_ip(p) for name, p in pods.items() if not gone(p) and pod_ip(p)}
    health = dict(zip(ips, await asyncio.gather(*(healthy(ip) for ip in ips.values())), strict=True))
    members: list[str] = list(c.status.get("members") or [])
    if not members:
        pending = c.status.get("restore") or {}
        if pending.get("startTime") and not pending.get("completionTime"):  # a restore that did not finish
            await restore_from(c, pods, pending)
        else:
            await bootstrap(c, pods, snapshot="")
        return
    lost = [m for m in members if failing(pods.get(m))]
    if lost and len(members) - len(lost) < len(members) // 2 + 1:  # no quorum left
        await restore(c, pods, lost)
        return
    alive = [m for m in members if health.get(m)]
    if not alive:
        await c.set_condition("Available", False, "NoHealthyMember", f"none of {', '.join(members)} answers yet")
        return
    listing = (await etcd(ips[alive[0]], "/v3/cluster/member/list", {}))["members"]
    if lost:  # a minority: remove them and let the next rounds add fresh members
        for name in lost:
            await remove_member(c, listing, name, ips[alive[0]], pods)
        return
    for learner in (m for m in listing if m.get("isLearner")):  # left by an operator stopped half-way
        await promote(ips[alive[0]], learner["ID"], 0)
    strays = [n for n, p in pods.items() if n not in members and not gone(p)]
    for name in strays:  # a pod that never became a member (the operator stopped half-way): start over
        await kube.delete(pods_path(c.ns, name), grace=0)
    # a new spec.version replaces the members one at a time: one more member of the new image joins,
    # then an old one leaves (never fewer members than asked for, so even a 1-member cluster keeps its data)
    outdated = [m for m in members if m in pods and member_image(pods[m]) != c.image]
    if len(members) < c.size or (outdated and len(members) == c.size and len(alive) == len(members)):
        if outdated and len(members) == c.size:
            c.event("Normal", "Upgrading", f"replacing {outdated[0]} ({member_image(pods[outdated[0]])}) "
                                           f"with a member of {c.image}")  # fmt: skip
        await add_member(c, pods, listing, ips[alive[0]])
    elif len(members) > c.size:
        victim = max(outdated or members, key=member_index)
        await remove_member(c, listing, victim, ips[next(m for m in alive if m != victim)], pods)
        why = "replaced by a member of " + c.image if outdated else "scaled down"
        c.event("Normal", "MemberRemoved", f"{why}: removed member {victim} ({len(members) - 1} now)")
    else:
        await report(c, alive, members)


def member_image(pod: Obj) -> str:
    return str(pod["spec"]["containers"][0].get("image", ""))


async def report(c: Cluster, alive: list[str], members: list[str]) -> None:
    available = len(alive) == len(members) == c.size
    if (c.status.get("readyMembers"), c.status.get("size")) != (len(alive), len(members)):
        await c.update_status(size=len(members), readyMembers=len(alive), members=members)
    if available:
        await c.set_condition("Available", True, "AllMembersHealthy", f"{len(alive)} of {c.size} members healthy")
        restoring = c.condition("Restoring")
        if restoring.get("status") == "True":
            restore = c.status.get("restore") or {}
            message = (f"restored from snapshot {restore.get('snapshot')} after losing "
                       f"{', '.join(restore.get('lostMembers') or [])}; grown back to {c.size} members")  # fmt: skip
            await c.set_condition("Restoring", False, "Recovered", message)
            c.event("Normal", "Recovered", message)
    else:
        await c.set_condition("Available", False, "MembersUnhealthy", f"{len(alive)} of {c.size} members healthy")


async def start_pod(c: Cluster, name: str, *, restoring: bool = False) -> str:
    """Create the member's pod (without a cluster to join yet) and wait for its IP."""
    await kube.create(pods_path(c.ns), c.member_pod(name, restoring=restoring))
    deadline = asyncio.get_running_loop().time() + POD_START_TIMEOUT
    while asyncio.get_running_loop().time() < deadline:
        pod = await kube.get(pods_path(c.ns, name))
        if pod is not None and not gone(pod) and pod_ip(pod):
            return pod_ip(pod)
        await asyncio.sleep(0.3)
    await kube.delete(pods_path(c.ns, name), grace=0)
    raise kopf.TemporaryError(f"pod {name} got no IP in {POD_START_TIMEOUT:.0f}s", delay=INTERVAL)


async def join(c: Cluster, name: str, initial_cluster: str, state: str, token: str, snapshot: str = "") -> None:
    keys = {"initial-cluster": initial_cluster, "initial-cluster-state": state, "initial-cluster-token": token,
            "restore-snapshot": snapshot}  # fmt: skip
    patch = {"metadata": {"annotations": {ANNOTATION + k: v for k, v in keys.items()}}}
    await kube.request("PATCH", pods_path(c.ns, name), patch, patch=True)


async def wait_healthy(ip: str, within: float = 60.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if await healthy(ip):
            return True
        await asyncio.sleep(0.3)
    return False


async def wait_deleted(c: Cluster, names: list[str], within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    for name in names:
        while await kube.get(pods_path(c.ns, name)) is not None:
            if asyncio.get_running_loop().time() > deadline:
                raise kopf.TemporaryError(f"pod {name} is still there", delay=INTERVAL)
            await asyncio.sleep(0.3)


async def bootstrap(c: Cluster, pods: dict[str, Obj], snapshot: str) -> None:
    """A new cluster: all `size` members at once when empty; restored from `snapshot`, the one member
    <cluster>-0 (the next rounds grow it through the member API)."""
    for old in pods:  # left-overs of an earlier attempt, or the survivors of a lost quorum
        await kube.delete(pods_path(c.ns, old), grace=0)
    await wait_deleted(c, list(pods))
    restores = int((c.status.get("restore") or {}).get("count", 0))
    token = f"{c.name}-{c.body['metadata']['uid'][:8]}-{restores}"
    names = [f"{c.name}-{i}" for i in range(1 if snapshot else c.size)]
    ips = await asyncio.gather(*(start_pod(c, name, restoring=bool(snapshot)) for name in names))
    initial = ",".join(f"{name}=http://{ip}:{PEER_PORT}" for name, ip in zip(names, ips, strict=True))
    for name in names:
        await join(c, name, initial, "new", token, snapshot)
    if not all(await asyncio.gather(*map(wait_healthy, ips))):
        for name in names:
            await kube.delete(pods_path(c.ns, name), grace=0)
        raise kopf.TemporaryError(f"{', '.join(names)} did not become healthy", delay=INTERVAL)
    await c.update_status(members=names, size=len(names), readyMembers=len(names), clusterToken=token)
    if not snapshot:
        c.event("Normal", "Bootstrapped", f"members {', '.join(names)} started at {', '.join(ips)}")


async def add_member(c: Cluster, pods: dict[str, Obj], listing: list[Obj], via: str) -> None:
    """Scale up by one: the pod, `member add` of a learner with its peer URL, the pod is told to join,
    and the learner is promoted once it has caught up. A learner does not vote, so the cluster keeps
    its quorum however long the new member takes to start."""
    used = set(c.status.get("members") or []) | {n for n, p in pods.items() if not gone(p)}
    index = next(i for i in range(len(used) + 1) if f"{c.name}-{i}" not in used)
    name = f"{c.name}-{index}"
    await wait_deleted(c, [name] if name in pods else [])  # the member's old pod, still terminating
    ip = await start_pod(c, name)
    peer = f"http://{ip}:{PEER_PORT}"
    deadline = asyncio.get_running_loop().time() + 20
    while True:  # etcd refuses a change of members until every member has been connected for 5 s
        try:
            added = await etcd(via, "/v3/cluster/member/add", {"peerURLs": [peer], "isLearner": True}, wait=10)
            break
        except (RuntimeError, OSError, aiohttp.ClientError, TimeoutError) as e:
            if "unhealthy cluster" not in str(e) or asyncio.get_running_loop().time() > deadline:
                await kube.delete(pods_path(c.ns, name), grace=0)
                raise
        await asyncio.sleep(0.5)
    member_names = {m["peerURLs"][0]: m.get("name") for m in listing if m.get("peerURLs")}
    cluster = [f"{member_names.get(m['peerURLs'][0]) or name}={m['peerURLs'][0]}" for m in added["members"]]
    await join(c, name, ",".join(cluster), "existing", str(c.status.get("clusterToken") or ""))
    members = [*(c.status.get("members") or []), name]
    await c.update_status(members=members, size=len(members))
    if not await promote(via, added["member"]["ID"], POD_START_TIMEOUT) or not await wait_healthy(ip):
        c.event("Warning", "MemberFailed", f"member {name} did not catch up in {POD_START_TIMEOUT:.0f}s; removing it")
        await remove_member(c, (await etcd(via, "/v3/cluster/member/list", {}))["members"], name, via, pods)
        return
    c.event("Normal", "MemberAdded", f"member {name} joined at {ip} ({len(members)} members, {c.size} wanted)")


async def promote(via: str, member_id: str, within: float) -> bool:
    """`member promote` of a learner, retried until it is in sync with the leader (or `within` passes)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await etcd(via, "/v3/cluster/member/promote", {"ID": member_id}, wait=10)
            return True
        except (RuntimeError, OSError, aiohttp.ClientError, TimeoutError) as e:
            if "not a learner" in str(e):
                return True  # promoted by an earlier attempt
            if asyncio.get_running_loop().time() > deadline:
                return False
        await asyncio.sleep(0.5)


async def remove_member(c: Cluster, listing: list[Obj], name: str, via: str, pods: dict[str, Obj]) -> None:
    """`member remove`, then the pod goes."""
    ip = pod_ip(pods[name]) if name in pods else ""
    for m in listing:
        if m.get("name") == name or (ip and f"http://{ip}:{PEER_PORT}" in (m.get("peerURLs") or [])):
            deadline = asyncio.get_running_loop().time() + 20
            while True:  # etcd refuses a change of voters until every member has been connected for 5 s
                try:
                    await etcd(via, "/v3/cluster/member/remove", {"ID": m["ID"]}, wait=10)
                    break
                except RuntimeError as e:
                    if "unhealthy cluster" not in str(e) or asyncio.get_running_loop().time() > deadline:
                        raise
                await asyncio.sleep(0.5)
    await kube.delete(pods_path(c.ns, name), grace=0)
    members = [m for m in c.status.get("members") or [] if m != name]
    await c.update_status(members=members, size=len(members))


async def restore(c: Cluster, pods: dict[str, Obj], lost: list[str]) -> None:
    """More than half of the members are gone: the cluster has no quorum and cannot heal itself."""
    members = c.status.get("members") or []
    snapshot = (c.status.get("backup") or {}).get("lastSnapshot") or ""
    what = f"{len(lost)} of {len(members)} members lost ({', '.join(lost)})"
    if not snapshot:
        await c.set_condition("Available", False, "QuorumLost", what + "; no snapshot to restore from")
        if c.condition("Restoring").get("reason") != "NoSnapshot":
            c.event("Warning", "QuorumLost", what + "; no snapshot to restore from")
            await c.set_condition("Restoring", False, "NoSnapshot", "no snapshot has been taken yet")
        return
    c.event("Warning", "QuorumLost", f"{what}; restoring from snapshot {snapshot}")
    await c.set_condition("Available", False, "QuorumLost", what)
    count = int((c.status.get("restore") or {}).get("count", 0)) + 1
    restore_status = {"snapshot": snapshot, "lostMembers": lost, "startTime": rfc3339(now()), "completionTime": None,
                      "count": count}  # fmt: skip
    await c.set_condition("Restoring", True, "RestoringFromSnapshot", f"{what}; restoring from snapshot {snapshot}",
                          restore=restore_status)  # fmt: skip
    # from here on, status.restore says a restore is under way: should this round fail, the next
    # rounds (or a restarted operator) resume it instead of starting an empty cluster
    await c.update_status(members=[])
    await restore_from(c, pods, restore_status)


async def restore_from(c: Cluster, pods: dict[str, Obj], restore_status: Obj) -> None:
    """Stop the survivors (newer data than the snapshot, but no quorum), start the first member from the
    snapshot; the next rounds grow the cluster back."""
    snapshot = restore_status["snapshot"]
    await bootstrap(c, pods, snapshot)
    await c.update_status(restore={**restore_status, "completionTime": rfc3339(now())})
    c.event("Normal", "Restored", f"restored member {c.name}-0 from snapshot {snapshot}; growing back to {c.size}")


# --- backups -----------------------------------------------------------------------------------

async def check_backup(c: Cluster) -> None:
    """Finish the running snapshot pod if it is done; start one when the schedule says so."""
    backup = dict(c.status.get("backup") or {})
    running = backup.get("runningPod")
    if running:
        pod = await kube.get(pods_path(c.ns, running))
        phase = (pod or {}).get("status", {}).get("phase")
        if pod is not None and phase not in ("Succeeded", "Failed"):
            return
        snap = backup.get("runningSnapshot") or ""
        backup.update(runningPod=None, runningSnapshot=None)  # null: a merge patch removes them
        if phase == "Succeeded":
            succeeded = int(backup.get("succeeded", 0)) + 1
            backup.update(lastSnapshot=snap, lastBackupTime=rfc3339(now()), succeeded=succeeded)
            message = f"snapshot {snap} saved"
            await c.set_condition("BackupSucceeded", True, "SnapshotSaved", message, backup=backup)
            c.event("Normal", "BackupSucceeded", message)
        else:
            message = f"snapshot {snap} failed: pod {running} " + (phase or "disappeared")
            await c.set_condition("BackupSucceeded", False, "SnapshotFailed", message, backup=backup)
            c.event("Warning", "BackupFailed", message)
        await kube.delete(pods_path(c.ns, running), grace=0)
    schedule = c.backup.get("schedule")
    if not schedule or c.condition("Available").get("status") != "True":
        return
    t = now()
    try:
        due = next_run(schedule, parse_time(backup.get("lastScheduleTime")) or t - datetime.timedelta(days=400))
    except ValueError as e:
        await c.set_condition("BackupSucceeded", False, "InvalidSchedule", str(e))
        return
    if due > t and backup.get("lastScheduleTime"):
        return
    members = await c.pods("member")
    endpoints = [pod_ip(p) for p in members if not gone(p) and pod_ip(p)]
    answers = await asyncio.gather(*map(healthy, endpoints))
    endpoint = next((ip for ip, ok in zip(endpoints, answers, strict=True) if ok), "")
    if not endpoint:
        return
    stamp = t.strftime("%Y%m%dT%H%M%SZ")
    snapshot, pod_name = f"{c.name}-{stamp}.db", f"{c.name}-backup-{stamp.lower()}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name, "labels": c.labels("backup")},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "snapshot", "image": c.image, "command": ["sh", "-c", BACKUP_SCRIPT],
               "env": [{"name": "ENDPOINT", "value": f"http://{endpoint}:{CLIENT_PORT}"},
                       {"name": "SNAPSHOT", "value": snapshot}, {"name": "CLUSTER", "value": c.name},
                       {"name": "KEEP", "value": str(int(c.backup.get("keep", 5)))}],
               "volumeMounts": [{"name": "backups", "mountPath": "/backups"}]}],
               "volumes": [c.backup_volume()]}}  # fmt: skip
    kopf.adopt(pod, owner=c.body)
    await kube.create(pods_path(c.ns), pod)
    backup.update(lastScheduleTime=rfc3339(t), runningPod=pod_name, runningSnapshot=snapshot)
    await c.update_status(backup=backup)
