"""Pod spec → ContainerConfig: command/args vs the image, env sources, $(VAR) expansion, users, limits."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from skiff.images.model import ImageConfig
from skiff.node.agent.podspec import (
    ContainerConfigError,
    PodContext,
    build_config,
    command_line,
    container_env,
    expand,
    pull_policy,
    referenced_objects,
    resolve_user,
    sandbox_config,
)

IMAGE = ImageConfig(env=("PATH=/bin", "FROM_IMAGE=1"), entrypoint=("/entry",), cmd=("default", "cmd"),
                    working_dir="/app", user="")  # fmt: skip


def pod(**spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "c", "image": "busybox"}])
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web", "tier": "x"},
                     "annotations": {"a": "b"}},
        "spec": {"nodeName": "n1", "containers": containers, **spec},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ({}, ["/entry", "default", "cmd"]),
        ({"args": ["x"]}, ["/entry", "x"]),
        ({"command": ["/bin/sh"]}, ["/bin/sh"]),
        ({"command": ["/bin/sh"], "args": ["-c", "true"]}, ["/bin/sh", "-c", "true"]),
        ({"command": ["echo", "$(A)", "$$(A)", "$(NOPE)"]}, ["echo", "1", "$(A)", "$(NOPE)"]),
    ],
    ids=["image", "args-replace-cmd", "command-drops-cmd", "command-and-args", "expansion"],
)
def test_command_line(container: dict[str, Any], expected: list[str]) -> None:
    assert command_line(container, IMAGE, {"A": "1"}) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$(A)-$(B)", "1-two"), ("$$(A)", "$(A)"), ("$(A", "$(A"), ("a$b", "a$b"), ("$(Z)", "$(Z)"), ("$$", "$")],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}) == expected


def test_env_sources_in_kubernetes_order() -> None:
    secret = {"data": {"pw": base64.b64encode(b"s3cret").decode(), "user": base64.b64encode(b"bob").decode()}}
    cm = {"data": {"color": "blue", "size": "L"}}
    ctx = PodContext(configmaps={"cm": cm}, secrets={"sec": secret}, pod_ip="10.0.0.5", host_ip="192.0.2.1",
                     node_allocatable={"cpu": "4", "memory": "8Gi"})  # fmt: skip
    container = {
        "name": "c",
        "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "FIRST", "value": "a"},
            {"name": "SECOND", "value": "$(FIRST)-$(CM_color)-$(LATER)"},
            {"name": "LATER", "value": "z"},
            {"name": "user", "value": "overrides-envFrom"},
            {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "size"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
            {"name": "CPU_LIM", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        ],
    }
    env = container_env(pod(containers=[container]), container, ctx)
    assert env == {
        "CM_color": "blue", "CM_size": "L", "pw": "s3cret", "user": "overrides-envFrom",
        "FIRST": "a", "SECOND": "a-blue-$(LATER)", "LATER": "z", "KEY": "L", "PW": "s3cret",
        "NAME": "p", "NS": "ns", "UID": "u1", "APP": "web", "NODE": "n1", "IP": "10.0.0.5", "HOST": "192.0.2.1",
        "MEM": "64", "CPU_REQ": "250", "CPU_LIM": "4",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"configMapKeyRef": {"name": "gone", "key": "k"}}, 'configmap "gone" not found'),
        ({"secretKeyRef": {"name": "gone", "key": "k"}}, 'secret "gone" not found'),
        ({"configMapKeyRef": {"name": "cm", "key": "nokey"}}, "couldn't find key nokey in ConfigMap ns/cm"),
    ],
    ids=["configmap", "secret", "key"],
)
def test_missing_sources_are_config_errors(env: dict[str, Any], message: str) -> None:
    container = {"name": "c", "env": [{"name": "X", "valueFrom": env}]}
    ctx = PodContext(configmaps={"cm": {"data": {"k": "v"}}, "gone": None}, secrets={"gone": None})
    with pytest.raises(ContainerConfigError) as info:
        container_env(pod(containers=[container]), container, ctx)
    assert str(info.value) == message


def test_optional_sources_may_be_missing() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "gone", "optional": True}}],
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}}}],
    }
    assert container_env(pod(containers=[container]), container, PodContext(configmaps={"gone": None})) == {}


def test_build_config_users_dirs_and_limits() -> None:
    container = {
        "name": "c", "command": ["run"], "workingDir": "/work",
        "env": [{"name": "FROM_IMAGE", "value": "2"}],
        "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}},
        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
    }  # fmt: skip
    p = pod(containers=[container], securityContext={"runAsGroup": 3000, "supplementalGroups": [4000], "fsGroup": 2000})
    config = build_config(p, container, IMAGE, PodContext(), mounts=[], attempt=2)
    assert config.args == ["run"]
    assert config.env == {"PATH": "/bin", "FROM_IMAGE": "2"}
    assert (config.cwd, config.uid, config.gid, config.additional_gids) == ("/work", 1000, 3000, [4000, 2000])
    assert config.readonly_rootfs and config.no_new_privs and config.cap_drop == ["ALL"]
    assert config.resources.cpu_limit_milli == 500 and config.resources.cpu_request_milli == 500
    assert config.resources.memory_limit_bytes == 128 * 2**20
    assert config.attempt == 2


def test_image_working_dir_and_user() -> None:
    image = ImageConfig(cmd=("sh",), working_dir="/srv", user="nobody")
    passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    config = build_config(pod(), {"name": "c"}, image, PodContext(), mounts=[], passwd=passwd)
    assert (config.cwd, config.uid, config.gid) == ("/srv", 65534, 65534)


@pytest.mark.parametrize(
    ("user", "expected"),
    [("0", (0, 0)), ("1000:50", (1000, 50)), ("nobody", (65534, 65534)), ("nobody:root", (65534, 0))],
)
def test_resolve_user(user: str, expected: tuple[int, int]) -> None:
    passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    assert resolve_user(user, passwd, "root:x:0:\n") == expected


def test_unknown_user_is_a_config_error() -> None:
    with pytest.raises(ContainerConfigError, match="unable to find user ghost"):
        resolve_user("ghost", "root:x:0:0::/root:/bin/sh\n")


def test_referenced_objects() -> None:
    p = pod(
        containers=[{"name": "c", "envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "s1"}}],
                     "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "b", "key": "k"}}}]}],
        volumes=[{"name": "v", "configMap": {"name": "c"}}, {"name": "w", "secret": {"secretName": "s2"}},
                 {"name": "x", "projected": {"sources": [{"configMap": {"name": "d"}}, {"secret": {"name": "s3"}}]}}],
    )  # fmt: skip
    assert referenced_objects(p) == ({"a", "b", "c", "d"}, {"s1", "s2", "s3"})


@pytest.mark.parametrize(
    ("image", "policy"), [("busybox", "Always"), ("busybox:latest", "Always"), ("busybox:1.36", "IfNotPresent"),
                          ("reg:5000/busybox", "Always"), ("busybox@sha256:abc", "IfNotPresent")],
)  # fmt: skip
def test_default_pull_policy(image: str, policy: str) -> None:
    assert pull_policy({"image": image}) == policy


def test_sandbox_config_host_ports_and_aliases() -> None:
    p = pod(
        containers=[{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 53,
                     "protocol": "UDP", "hostPort": 5353}, {"containerPort": 9000}]}],
        hostAliases=[{"ip": "10.1.2.3", "hostnames": ["foo", "bar"]}], hostname="h", subdomain="s",
    )  # fmt: skip
    config = sandbox_config(p)
    assert (config.uid, config.name, config.namespace, config.hostname, config.subdomain) == ("u1", "p", "ns", "h", "s")
    assert [(m.host_port, m.container_port, m.protocol) for m in config.port_mappings] == [
        (8080, 80, "tcp"),
        (5353, 53, "udp"),
    ]
    assert config.host_aliases == [("10.1.2.3", ["foo", "bar"])]


@pytest.mark.parametrize(
    ("pod_sc", "container_sc", "image_user", "message"),
    [
        ({"runAsNonRoot": True}, {}, "", "container has runAsNonRoot and image will run as root"),
        ({"runAsNonRoot": True}, {}, "0:0", "container has runAsNonRoot and image will run as root"),
        ({}, {"runAsNonRoot": True}, "nobody",
         "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root"),
        ({"runAsNonRoot": True, "runAsUser": 1000}, {"runAsUser": 0}, "1000",
         "container's runAsUser breaks non-root policy"),
        ({"runAsNonRoot": True}, {}, "1000", None),
        ({"runAsNonRoot": True}, {"runAsUser": 10}, "", None),
        ({"runAsNonRoot": True}, {"runAsNonRoot": False}, "", None),  # the container's setting wins
    ],
)  # fmt: skip
def test_run_as_non_root_as_the_kubelet_verifies_it(
    pod_sc: dict[str, Any], container_sc: dict[str, Any], image_user: str, message: str | None
) -> None:
    container = {"name": "c", "command": ["run"], "securityContext": container_sc}
    p = pod(containers=[container], securityContext=pod_sc)
    image = ImageConfig(cmd=("sh",), user=image_user)
    if message is None:
        build_config(p, container, image, PodContext(), mounts=[], passwd="nobody:x:65534:65534::/:/bin/sh\n")
        return
    with pytest.raises(ContainerConfigError) as err:
        build_config(p, container, image, PodContext(), mounts=[], passwd="nobody:x:65534:65534::/:/bin/sh\n")
    assert str(err.value) == f'{message} (pod: "p_ns(u1)", container: c)'
