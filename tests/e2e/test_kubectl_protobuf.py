"""The real kubectl's protobuf request bodies, decoded by `skiff.api.protobuf`.

A throwaway aiohttp server stands in for the API server: it answers discovery,
records every request, decodes protobuf bodies with `decode_k8s_protobuf` and
echoes the object back as JSON. Each `kubectl create ...` is run twice: for
real (kubectl POSTs protobuf) and with `--dry-run=client -o json` (kubectl
prints the very object as JSON, without sending it). The decoded body must
equal that JSON - the JSON the same command would have sent.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from skiff.api.errors import StatusError, UnsupportedMediaType
from skiff.api.protobuf import PROTOBUF_MEDIA_TYPE, decode_k8s_protobuf

KUBECTL = Path(sys.executable).with_name("kubectl")

pytestmark = pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl is not installed in the venv")


def _resource(name: str, kind: str, namespaced: bool = True, verbs: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "name": name,
        "singularName": kind.lower(),
        "namespaced": namespaced,
        "kind": kind,
        "verbs": list(verbs or ("create", "delete", "get", "list", "patch", "update", "watch")),
    }


DISCOVERY: dict[str, list[dict[str, Any]]] = {
    "v1": [
        _resource("namespaces", "Namespace", namespaced=False),
        _resource("configmaps", "ConfigMap"),
        _resource("secrets", "Secret"),
        _resource("services", "Service"),
        _resource("serviceaccounts", "ServiceAccount"),
        _resource("resourcequotas", "ResourceQuota"),
        _resource("pods", "Pod"),
    ],
    "apps/v1": [_resource("deployments", "Deployment")],
    "batch/v1": [_resource("jobs", "Job"), _resource("cronjobs", "CronJob")],
    "rbac.authorization.k8s.io/v1": [
        _resource("roles", "Role"),
        _resource("rolebindings", "RoleBinding"),
        _resource("clusterroles", "ClusterRole", namespaced=False),
        _resource("clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    ],
    "scheduling.k8s.io/v1": [_resource("priorityclasses", "PriorityClass", namespaced=False)],
    "policy/v1": [_resource("poddisruptionbudgets", "PodDisruptionBudget")],
    "networking.k8s.io/v1": [_resource("ingresses", "Ingress")],
    "authorization.k8s.io/v1": [
        _resource("selfsubjectaccessreviews", "SelfSubjectAccessReview", False, ("create",)),
        _resource("selfsubjectrulesreviews", "SelfSubjectRulesReview", False, ("create",)),
    ],
    "authentication.k8s.io/v1": [_resource("selfsubjectreviews", "SelfSubjectReview", False, ("create",))],
}

# A CronJob as a server would return it, with much of PodSpec set (defaults, zeros and alpha fields
# included), for `kubectl create job --from=cronjob/nightly`, which copies its job template.
POD_SPEC: dict[str, Any] = {
    "restartPolicy": "Never",
    "terminationGracePeriodSeconds": 0,
    "dnsPolicy": "ClusterFirst",
    "schedulerName": "default-scheduler",
    "serviceAccountName": "worker",
    "automountServiceAccountToken": False,
    "enableServiceLinks": False,
    "hostNetwork": False,
    "priority": 0,
    "nodeSelector": {"disk": "ssd"},
    "imagePullSecrets": [{"name": "registry"}],
    "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db", "db.local"]}],
    "dnsConfig": {"nameservers": ["8.8.8.8"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
    "securityContext": {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "fsGroup": 2000,
        "supplementalGroups": [1, 2],
        "seccompProfile": {"type": "RuntimeDefault"},
        "sysctls": [{"name": "net.ipv4.ip_forward", "value": "1"}],
    },
    "tolerations": [
        {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0},
        {"operator": "Exists"},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]},
                }
            ],
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
                        "topologyKey": "kubernetes.io/hostname",
                        "namespaces": ["default"],
                    },
                }
            ]
        },
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"a": "b"}},
            "minDomains": 2,
        }
    ],
    "schedulingGroup": {"podGroupName": "group"},
    "evictionResponders": [{"name": "drainer", "priority": 0}, {"name": "other"}],
    "volumes": [
        {
            "name": "cfg",
            "configMap": {
                "name": "settings",
                "defaultMode": 420,
                "items": [{"key": "a", "path": "a.txt", "mode": 256, "user": 0}],
                "optional": False,
                "defaultUser": 1000,
            },
        },
        {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 256}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi", "mode": 448}},
        {"name": "host", "hostPath": {"path": "/var", "type": ""}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
        {
            "name": "podinfo",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}},
                    {
                        "path": "cpu",
                        "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu", "divisor": "1m"},
                    },
                ]
            },
        },
        {
            "name": "token",
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                    {"clusterTrustBundle": {"signerName": "example.com/signer", "path": "bundle.pem"}},
                ],
            },
        },
        {
            "name": "scratch",
            "ephemeral": {
                "volumeClaimTemplate": {
                    "metadata": {"labels": {"t": "1"}},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "",
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            },
        },
        {"name": "share", "nfs": {"server": "nfs.local", "path": "/exports"}},
        {"name": "csi", "csi": {"driver": "csi.example.com", "readOnly": False, "volumeAttributes": {"x": "y"}}},
        {"name": "tools", "image": {"reference": "busybox", "pullPolicy": "IfNotPresent"}},
    ],
    "initContainers": [{"name": "sidecar", "image": "busybox", "restartPolicy": "Always", "command": ["sh"]}],
    "containers": [
        {
            "name": "main",
            "image": "busybox:1.36",
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c"],
            "args": ["echo $(A)"],
            "workingDir": "/w",
            "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP", "hostPort": 0},
                {"containerPort": 53, "protocol": "UDP", "hostIP": "0.0.0.0"},
            ],
            "env": [
                {"name": "A", "value": "1"},
                {"name": "EMPTY", "value": ""},
                {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a", "optional": True}}},
                {"name": "SEC", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
            ],
            "envFrom": [
                {"prefix": "P_", "configMapRef": {"name": "settings"}},
                {"secretRef": {"name": "creds", "optional": False}},
            ],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}},
            "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
            "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True, "bindMountOptions": ["nosuid"]},
                {"name": "tmp", "mountPath": "/tmp", "subPath": "x", "mountPropagation": "None"},
            ],
            "livenessProbe": {
                "httpGet": {
                    "path": "/healthz",
                    "port": 8080,
                    "scheme": "HTTP",
                    "httpHeaders": [{"name": "X", "value": "y"}],
                },
                "initialDelaySeconds": 3,
                "timeoutSeconds": 1,
                "periodSeconds": 10,
                "successThreshold": 1,
                "failureThreshold": 3,
            },
            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
            "startupProbe": {
                "exec": {"command": ["true"]},
                "failureThreshold": 30,
                "terminationGracePeriodSeconds": 10,
            },
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}, "postStart": {"exec": {"command": ["echo"]}}},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "readOnlyRootFilesystem": True,
                "runAsUser": 1000,
                "runAsGroup": 0,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "seLinuxOptions": {"level": "s0:c1"},
                "appArmorProfile": {"type": "RuntimeDefault"},
            },
            "stdin": False,
            "tty": True,
        },
        {
            "name": "grpc",
            "image": "server",
            "livenessProbe": {"grpc": {"port": 9000}},
            "readinessProbe": {"grpc": {"port": 9000, "service": ""}},
        },
    ],
}

CRONJOB: dict[str, Any] = {
    "kind": "CronJob",
    "apiVersion": "batch/v1",
    "metadata": {"name": "nightly", "namespace": "default", "uid": "0b5b6f1e-1", "resourceVersion": "7"},
    "spec": {
        "schedule": "0 3 * * *",
        "jobTemplate": {
            "metadata": {"labels": {"job": "nightly"}, "annotations": {"note": "copied"}},
            "spec": {
                "backoffLimit": 0,
                "completions": 2,
                "parallelism": 1,
                "activeDeadlineSeconds": 100,
                "ttlSecondsAfterFinished": 0,
                "completionMode": "NonIndexed",
                "suspend": False,
                "podFailurePolicy": {
                    "rules": [
                        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
                        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                    ]
                },
                "scheduling": {
                    "schedulingPolicy": {"gang": {"minCount": 2}},
                    "schedulingConstraints": {"topology": [{"key": "zone"}]},
                    "disruptionMode": {"all": {}},
                    "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "gpus"}],
                },
                "template": {"metadata": {"labels": {"pod": "nightly"}}, "spec": POD_SPEC},
            },
        },
    },
}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    accept: str
    body: bytes
    decoded: dict[str, Any] | None


class FakeAPIServer:
    """Discovery, a CronJob to copy, and POSTs decoded and echoed back; every request recorded."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.allowed = True
        self._loop = asyncio.new_event_loop()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> FakeAPIServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    async def _serve(self) -> None:
        assert self._runner is not None
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        if request.method == "GET":
            discovery = self._discovery(path)
            if discovery is not None:
                return web.json_response(discovery)
        record = Recorded(
            request.method,
            path,
            dict(request.query),
            request.headers.get("Content-Type", ""),
            request.headers.get("Accept", ""),
            body,
            None,
        )
        self.requests.append(record)
        if request.method == "GET" and path == "/apis/batch/v1/namespaces/default/cronjobs/nightly":
            return web.json_response(CRONJOB)
        if request.method != "POST":
            return _status(404, "NotFound", f"{path} not found")
        try:
            if record.content_type == PROTOBUF_MEDIA_TYPE:
                record.decoded = decode_k8s_protobuf(body)
            else:
                record.decoded = json.loads(body)
        except StatusError as err:
            return web.json_response(err.status(), status=err.code)
        obj = dict(record.decoded or {})
        if obj.get("metadata", {}).get("name") == "reject-me":
            err = UnsupportedMediaType("this server says no")
            return web.json_response(err.status(), status=err.code)
        kind = obj.get("kind")
        if kind == "SelfSubjectAccessReview":
            obj["status"] = {"allowed": self.allowed}
        elif kind == "SelfSubjectRulesReview":
            rules = [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]
            obj["status"] = {"resourceRules": rules, "nonResourceRules": [], "incomplete": False}
        elif kind == "SelfSubjectReview":
            obj["status"] = {"userInfo": {"username": "alice", "groups": ["devs", "system:authenticated"]}}
        elif kind == "TokenRequest":
            obj["status"] = {"token": "t0ken", "expirationTimestamp": "2030-01-01T00:00:00Z"}
        return web.json_response(obj, status=201)

    @staticmethod
    def _discovery(path: str) -> dict[str, Any] | None:
        if path == "/version":
            return {"major": "1", "minor": "37", "gitVersion": "v1.37.1"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            groups = []
            for gv in DISCOVERY:
                if "/" in gv:
                    name, version = gv.split("/")
                    entry = {"groupVersion": gv, "version": version}
                    groups.append({"name": name, "versions": [entry], "preferredVersion": entry})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        gv = path.removeprefix("/api/").removeprefix("/apis/")
        if path.startswith("/api") and gv in DISCOVERY:
            return {"kind": "APIResourceList", "groupVersion": gv, "resources": DISCOVERY[gv]}
        return None


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }
    return web.json_response(body, status=code)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAPIServer]:
    server = FakeAPIServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kube_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HOME for kubectl (its discovery cache goes there) plus the input files some commands read."""
    home = tmp_path_factory.mktemp("kubectl-home")
    (home / "blob.bin").write_bytes(bytes(range(256)))
    (home / "app.env").write_text("# settings\nMODE=fast\nEMPTY=\n")
    (home / "greeting.txt").write_text("hello\n")
    cert, key = _self_signed_pair()
    (home / "tls.crt").write_bytes(cert)
    (home / "tls.key").write_bytes(key)
    return home


def _self_signed_pair() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def kubectl(fake: FakeAPIServer, home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "KUBECONFIG": str(home / "no-kubeconfig"), "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [str(KUBECTL), "--server", fake.url, *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _with_dry_run(args: tuple[str, ...]) -> list[str]:
    """`args` with `--dry-run=client -o json` placed before any `--` (the container command)."""
    flags = ["--dry-run=client", "-o", "json"]
    if "--" in args:
        cut = args.index("--")
        return [*args[:cut], *flags, *args[cut:]]
    return [*args, *flags]


CREATE_COMMANDS: list[tuple[str, ...]] = [
    ("create", "namespace", "team-a"),
    ("create", "configmap", "settings", "--from-literal=a=b", "--from-literal=empty=", "-n", "default"),
    ("create", "configmap", "files", "--from-file=blob.bin", "--from-file=greeting.txt"),
    ("create", "configmap", "env", "--from-env-file=app.env"),
    ("create", "secret", "generic", "creds", "--from-literal=k=v", "--from-file=blob.bin", "--type=Opaque"),
    ("create", "secret", "tls", "web-tls", "--cert=tls.crt", "--key=tls.key", "-n", "default"),
    (
        "create",
        "secret",
        "docker-registry",
        "registry",
        "--docker-server=registry.example.com",
        "--docker-username=u",
        "--docker-password=p",
        "--docker-email=u@example.com",
    ),
    ("create", "deployment", "web", "--image=nginx", "--port=80", "--replicas=0", "-n", "default"),
    ("create", "deployment", "multi", "--image=nginx", "--image=busybox", "--save-config"),
    ("create", "deployment", "cmd", "--image=busybox", "--", "sleep", "3600"),
    ("create", "service", "clusterip", "api", "--tcp=5678:8080", "--tcp=9090:metrics"),
    ("create", "service", "clusterip", "headless", "--clusterip=None"),
    ("create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"),
    ("create", "service", "loadbalancer", "lb", "--tcp=443:https"),
    ("create", "service", "externalname", "ext", "--external-name=example.com", "--tcp=80"),
    ("create", "serviceaccount", "worker", "-n", "default"),
    ("create", "job", "once", "--image=busybox", "--", "echo", "hi"),
    ("create", "job", "copy", "--from=cronjob/nightly", "-n", "default"),
    ("create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *", "--restart=OnFailure", "--", "date"),
    ("create", "role", "reader", "--verb=get,list", "--resource=pods,deployments.apps,pods/log", "--resource-name=a"),
    ("create", "clusterrole", "logs", "--verb=get", "--non-resource-url=/logs/*"),
    ("create", "clusterrole", "aggregate", "--aggregation-rule=rbac.example.com/aggregate-to-view=true"),
    ("create", "rolebinding", "rb", "--role=reader", "--user=alice", "--group=devs", "--serviceaccount=default:worker"),
    ("create", "clusterrolebinding", "crb", "--clusterrole=logs", "--user=bob", "--group=ops"),
    ("create", "quota", "compute", "--hard=cpu=1,memory=1G,pods=2,requests.storage=10Gi", "--scopes=BestEffort"),
    ("create", "priorityclass", "high", "--value=1000", "--description=important", "--preemption-policy=Never"),
    ("create", "priorityclass", "zero", "--value=0", "--global-default=true"),
    ("create", "poddisruptionbudget", "pdb-min", "--selector=app=web", "--min-available=50%"),
    ("create", "poddisruptionbudget", "pdb-max", "--selector=app=web", "--max-unavailable=1"),
    (
        "create",
        "ingress",
        "site",
        "--class=nginx",
        "--rule=foo.com/bar=svc1:8080,tls=site-cert",
        "--rule=/static*=svc2:http",
        "--default-backend=svc3:80",
        "--annotation=a=b",
    ),
]


@pytest.mark.parametrize("args", CREATE_COMMANDS, ids=lambda args: " ".join(args[1:4]))
def test_create_body_equals_the_json_kubectl_would_send(
    fake: FakeAPIServer, kube_home: Path, args: tuple[str, ...]
) -> None:
    fake.requests.clear()
    kubectl(fake, kube_home, *args)
    [post] = fake.posts()
    assert post.content_type == PROTOBUF_MEDIA_TYPE
    assert post.accept == f"{PROTOBUF_MEDIA_TYPE},application/json"
    assert post.query == {"fieldManager": "kubectl-create", "fieldValidation": "Strict"}

    dry_run = json.loads(kubectl(fake, kube_home, *_with_dry_run(args)).stdout)
    assert post.decoded == dry_run


def test_job_from_cronjob_reads_the_cronjob_in_json(fake: FakeAPIServer, kube_home: Path) -> None:
    fake.requests.clear()
    kubectl(fake, kube_home, "create", "job", "copy2", "--from=cronjob/nightly", "-n", "default")
    get, post = fake.requests
    # The source object is fetched in JSON (resource builder), only the new Job is sent in protobuf.
    assert (get.method, get.accept) == ("GET", "application/json, */*")
    assert post.content_type == PROTOBUF_MEDIA_TYPE
    assert post.decoded is not None
    assert post.decoded["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "0b5b6f1e-1", "controller": True}
    ]
    assert post.decoded["spec"]["template"]["spec"]["evictionResponders"] == [
        {"name": "drainer", "priority": 0},
        {"name": "other", "priority": None},
    ]


def test_server_dry_run_adds_the_query_parameter(fake: FakeAPIServer, kube_home: Path) -> None:
    fake.requests.clear()
    result = kubectl(fake, kube_home, "create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server")
    assert "created (server dry run)" in result.stdout
    [post] = fake.posts()
    assert post.query == {"dryRun": "All", "fieldManager": "kubectl-create", "fieldValidation": "Strict"}
    assert post.decoded == {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "dry"}, "data": {"a": "b"}}


def test_auth_can_i_resource(fake: FakeAPIServer, kube_home: Path) -> None:
    fake.requests.clear()
    fake.allowed = True
    result = kubectl(fake, kube_home, "auth", "can-i", "list", "deployments.apps", "-n", "kube-system")
    assert result.stdout.strip() == "yes"
    [post] = fake.posts()
    assert post.path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert post.content_type == PROTOBUF_MEDIA_TYPE
    assert post.query == {}
    assert post.decoded == {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": {
            "resourceAttributes": {
                "namespace": "kube-system",
                "verb": "list",
                "group": "apps",
                "resource": "deployments",
            }
        },
        "status": {"allowed": False},
    }


def test_auth_can_i_denied_subresource_and_name(fake: FakeAPIServer, kube_home: Path) -> None:
    fake.requests.clear()
    fake.allowed = False
    try:
        result = kubectl(fake, kube_home, "auth", "can-i", "get", "pods/web", "--subresource=log", check=False)
    finally:
        fake.allowed = True
    assert (result.returncode, result.stdout.strip()) == (1, "no")
    [post] = fake.posts()
    assert post.decoded is not None
    assert post.decoded["spec"] == {
        "resourceAttributes": {
            "namespace": "default",
            "verb": "get",
            "resource": "pods",
            "subresource": "log",
            "name": "web",
        }
    }


def test_auth_can_i_non_resource_url(fake: FakeAPIServer, kube_home: Path) -> None:
    fake.requests.clear()
    assert kubectl(fake, kube_home, "auth", "can-i", "get", "/logs/").stdout.strip() == "yes"
    [post] = fake.posts()
    assert post.decoded is not None
    assert post.decoded["spec"] == {"nonResourceAttributes": {"path": "/logs/", "verb": "get"}}


def test_auth_can_i_list(fake: FakeAPIServer, kube_home: Path) -> None:
    fake.requests.clear()
    result = kubectl(fake, kube_home, "auth", "can-i", "--list", "-n", "team-a")
    assert "pods" in result.stdout and "[get list]" in result.stdout
    [post] = fake.posts()
    assert post.path == "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
    assert post.decoded == {
        "kind": "SelfSubjectRulesReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": {"namespace": "team-a"},
        "status": {"resourceRules": None, "nonResourceRules": None, "incomplete": False},
    }


def test_auth_whoami(fake: FakeAPIServer, kube_home: Path) -> None:
    fake.requests.clear()
    result = kubectl(fake, kube_home, "auth", "whoami")
    assert "alice" in result.stdout and "system:authenticated" in result.stdout
    [post] = fake.posts()
    assert post.path == "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    assert post.decoded == {
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "status": {"userInfo": {}},
    }


def test_create_token(fake: FakeAPIServer, kube_home: Path) -> None:
    fake.requests.clear()
    args = ("--duration=10m", "--audience=a", "--audience=b", "--bound-object-kind=Pod", "--bound-object-name=p1")
    result = kubectl(fake, kube_home, "create", "token", "worker", "-n", "default", *args, "--bound-object-uid=u1")
    assert result.stdout.strip() == "t0ken"
    [post] = fake.posts()
    assert post.path == "/api/v1/namespaces/default/serviceaccounts/worker/token"
    assert post.decoded == {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "spec": {
            "audiences": ["a", "b"],
            "expirationSeconds": 600,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p1", "uid": "u1"},
        },
        "status": {"token": "", "expirationTimestamp": None},
    }


def test_a_415_is_final(fake: FakeAPIServer, kube_home: Path) -> None:
    """kubectl does not retry in JSON when the server refuses protobuf: decoding is the only way."""
    fake.requests.clear()
    result = kubectl(fake, kube_home, "create", "configmap", "reject-me", "--from-literal=a=b", check=False)
    assert result.returncode == 1
    assert "this server says no" in result.stderr
    [post] = fake.posts()
    assert post.content_type == PROTOBUF_MEDIA_TYPE
