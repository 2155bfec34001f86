"""The real kubectl against skiff: the `create` generators (protobuf request bodies) and `auth`."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    name = f"kc-create-{uuid.uuid4().hex[:6]}"
    out = server.kubectl("create", "namespace", name).stdout
    assert out.strip() == f"namespace/{name} created"
    return name


def get_json(server: Server, *args: str) -> Any:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def test_create_namespace(server: Server) -> None:
    name = f"kc-ns-{uuid.uuid4().hex[:6]}"
    assert server.kubectl("create", "namespace", name).stdout.strip() == f"namespace/{name} created"
    ns = get_json(server, "namespace", name)
    assert ns["status"]["phase"] == "Active"
    assert ns["spec"]["finalizers"] == ["kubernetes"]
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": name}
    assert "namespace" not in ns["metadata"]
    proc = server.kubectl("create", "namespace", name, check=False)
    assert proc.returncode == 1
    assert f'Error from server (AlreadyExists): namespaces "{name}" already exists' in proc.stderr


def test_create_configmap_from_literal(server: Server, ns: str) -> None:
    out = server.kubectl(
        "create", "configmap", "settings", "-n", ns, "--from-literal=mode=fast", "--from-literal=greeting=hello world"
    ).stdout
    assert out.strip() == "configmap/settings created"
    cm = get_json(server, "configmap", "settings", "-n", ns)
    assert cm["data"] == {"mode": "fast", "greeting": "hello world"}
    assert cm["metadata"]["namespace"] == ns


def test_create_configmap_from_file(server: Server, ns: str, tmp_path: Any) -> None:
    path = tmp_path / "app.properties"
    path.write_text("a=1\nb=2\n")
    server.kubectl("create", "configmap", "from-file", "-n", ns, f"--from-file={path}")
    assert get_json(server, "configmap", "from-file", "-n", ns)["data"] == {"app.properties": "a=1\nb=2\n"}


def test_create_secret_generic(server: Server, ns: str) -> None:
    literals = ["--from-literal=user=admin", "--from-literal=password=p@ss w0rd!"]
    out = server.kubectl("create", "secret", "generic", "creds", "-n", ns, *literals).stdout
    assert out.strip() == "secret/creds created"
    secret = get_json(server, "secret", "creds", "-n", ns)
    assert secret["type"] == "Opaque"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"user": "admin", "password": "p@ss w0rd!"}
    out = server.kubectl("get", "secret", "creds", "-n", ns, "-o", "jsonpath={.data.password}").stdout
    assert base64.b64decode(out).decode() == "p@ss w0rd!"
    table = server.kubectl("get", "secret", "creds", "-n", ns).stdout.split()
    assert table[:7] == ["NAME", "TYPE", "DATA", "AGE", "creds", "Opaque", "2"]


def test_create_deployment(server: Server, ns: str) -> None:
    out = server.kubectl("create", "deployment", "api", "-n", ns, "--image=nginx:1.25", "--replicas=3").stdout
    assert out.strip() == "deployment.apps/api created"
    deploy = get_json(server, "deployment", "api", "-n", ns)
    assert deploy["spec"]["replicas"] == 3
    assert deploy["metadata"]["labels"] == {"app": "api"}
    assert deploy["spec"]["selector"] == {"matchLabels": {"app": "api"}}
    assert deploy["spec"]["template"]["metadata"]["labels"] == {"app": "api"}
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    assert (container["name"], container["image"]) == ("nginx", "nginx:1.25")
    # defaults applied by the server, as in Kubernetes
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert deploy["metadata"]["generation"] == 1
    row = server.kubectl("get", "deploy", "api", "-n", ns, "--no-headers").stdout.split()
    assert row[:2] == ["api", "0/3"] and row[3] == "0"  # no node runs its pods; UP-TO-DATE is the controller's


def test_create_service_clusterip(server: Server, ns: str) -> None:
    out = server.kubectl("create", "service", "clusterip", "backend", "-n", ns, "--tcp=80:8080").stdout
    assert out.strip() == "service/backend created"
    svc = get_json(server, "service", "backend", "-n", ns)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"app": "backend"}
    assert svc["spec"]["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    row = server.kubectl("get", "svc", "backend", "-n", ns, "--no-headers").stdout.split()
    assert row[0:2] == ["backend", "ClusterIP"]
    assert row[4] == "80/TCP"


def test_create_job_and_cronjob(server: Server, ns: str) -> None:
    out = server.kubectl("create", "job", "once", "-n", ns, "--image=busybox:1.36", "--", "echo", "hi").stdout
    assert out.strip() == "job.batch/once created"
    job = get_json(server, "job", "once", "-n", ns)
    uid = job["metadata"]["uid"]
    # the server picks the selector and labels the pod template, as Kubernetes' job strategy does
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert job["spec"]["template"]["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": "once",
        "controller-uid": uid,
        "job-name": "once",
    }
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["echo", "hi"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 6

    out = server.kubectl(
        "create", "cronjob", "nightly", "-n", ns, "--image=busybox:1.36", "--schedule=0 3 * * *", "--", "date"
    ).stdout
    assert out.strip() == "cronjob.batch/nightly created"
    row = server.kubectl("get", "cj", "nightly", "-n", ns, "--no-headers").stdout.split()
    assert row[:6] == ["nightly", "0", "3", "*", "*", "*"]
    out = server.kubectl("create", "job", "from-cron", "-n", ns, "--from=cronjob/nightly").stdout
    assert out.strip() == "job.batch/from-cron created"
    job = get_json(server, "job", "from-cron", "-n", ns)
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["name"] == "nightly"


def test_run_pod_and_expose(server: Server, ns: str) -> None:
    out = server.kubectl("run", "solo", "-n", ns, "--image=nginx:1.25", "--labels=app=solo", "--port=80").stdout
    assert out.strip() == "pod/solo created"
    pod = get_json(server, "pod", "solo", "-n", ns)
    assert pod["metadata"]["labels"] == {"app": "solo"}
    assert pod["spec"]["containers"][0]["image"] == "nginx:1.25"
    assert pod["status"]["phase"] == "Pending"
    row = server.kubectl("get", "pods", "solo", "-n", ns, "--no-headers").stdout.split()
    assert row[:4] == ["solo", "0/1", "Pending", "0"]

    out = server.kubectl("expose", "pod", "solo", "-n", ns, "--port=8080", "--target-port=80").stdout
    assert out.strip() == "service/solo exposed"
    svc = get_json(server, "service", "solo", "-n", ns)
    assert svc["spec"]["selector"] == {"app": "solo"}
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(8080, 80)]


def test_create_dry_run_persists_nothing(server: Server, ns: str) -> None:
    out = server.kubectl("create", "configmap", "dry", "-n", ns, "--from-literal=a=1", "--dry-run=server", "-o", "yaml")
    cm = yaml.safe_load(out.stdout)
    assert cm["data"] == {"a": "1"}
    assert cm["metadata"]["uid"]
    assert server.kubectl("get", "configmap", "dry", "-n", ns, check=False).returncode == 1

    # the usual idiom: a client-side dry run piped into apply
    manifest = server.kubectl("create", "configmap", "piped", "--from-literal=k=v", "--dry-run=client", "-o", "yaml")
    out = server.kubectl("apply", "-n", ns, "-f", "-", input=manifest.stdout).stdout
    assert out.strip() == "configmap/piped created"
    assert get_json(server, "configmap", "piped", "-n", ns)["data"] == {"k": "v"}


def test_create_from_file(server: Server, ns: str) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: created-from-file\ndata:\n  a: '1'\n"
    out = server.kubectl("create", "-n", ns, "-f", "-", input=manifest).stdout
    assert out.strip() == "configmap/created-from-file created"
    # `create` records no last-applied configuration (only `apply` and `--save-config` do)
    assert "annotations" not in get_json(server, "configmap", "created-from-file", "-n", ns)["metadata"]


# ------------------------------------------------------------------------------------------- auth


def test_auth_can_i(server: Server, ns: str) -> None:
    assert server.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    assert server.kubectl("auth", "can-i", "delete", "deployments.apps", "-n", ns).stdout.strip() == "yes"
    assert server.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"
    out = server.kubectl("auth", "can-i", "--list", "-n", ns).stdout
    assert out.splitlines()[0].split() == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    assert ["*.*", "[]", "[]", "[*]"] in [line.split() for line in out.splitlines()]


def test_auth_whoami(server: Server) -> None:
    out = server.kubectl("auth", "whoami").stdout
    table = {line.split()[0]: line.split(None, 1)[1].strip() for line in out.splitlines()[1:]}
    assert table["Username"] == "system:admin"
    assert "system:masters" in table["Groups"]
    assert "system:authenticated" in table["Groups"]

    review = json.loads(server.kubectl("auth", "whoami", "-o", "json").stdout)
    assert review["kind"] == "SelfSubjectReview"
    assert review["apiVersion"] == "authentication.k8s.io/v1"
    assert review["status"]["userInfo"]["username"] == "system:admin"
    assert set(review["status"]["userInfo"]["groups"]) == {"system:masters", "system:authenticated"}
