"""Seccomp profiles as pure logic: the API's validation, the RuntimeDefault filter, a Localhost file's
conversion to the OCI form and which profile a container of a pod gets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skiff.api.seccomp_validation import validate_pod_seccomp
from skiff.node.agent.seccomp import SeccompError, container_profile
from skiff.node.runtime.oci_spec import DEFAULT_CAPABILITIES
from skiff.node.runtime.seccomp import ProfileError, from_profile_file, runtime_default
from skiff.node.runtime.types import ContainerConfig, SeccompProfile
from tests.unit.test_runtime_oci_spec import spec

POD = "spec.securityContext.seccompProfile"
C0 = "spec.containers[0].securityContext.seccompProfile"


def pod(pod_profile: Any = None, container_profile: Any = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    if container_profile is not None:
        container["securityContext"] = {"seccompProfile": container_profile}
    spec: dict[str, Any] = {"containers": [container]}
    if pod_profile is not None:
        spec["securityContext"] = {"seccompProfile": pod_profile}
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u"}, "spec": spec}


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ({"type": "RuntimeDefault"}, []),
        ({"type": "Localhost", "localhostProfile": "profiles/audit.json"}, []),
        ({}, [("FieldValueRequired", f"{C0}.type", "Required value: type is required when seccompProfile is set")]),
        ({"type": "Default"}, [("FieldValueNotSupported", f"{C0}.type", 'Unsupported value: "Default": supported '
                                'values: "Localhost", "RuntimeDefault", "Unconfined"')]),
        ({"type": "Localhost"}, [("FieldValueRequired", f"{C0}.localhostProfile",
                                  "Required value: must be set when seccomp type is Localhost")]),
        ({"type": "Unconfined", "localhostProfile": "a.json"}, [
            ("FieldValueInvalid", f"{C0}.localhostProfile",
             'Invalid value: "a.json": can only be set when seccomp type is Localhost')]),
        ({"type": "Localhost", "localhostProfile": "/etc/a.json"}, [
            ("FieldValueInvalid", f"{C0}.localhostProfile", 'Invalid value: "/etc/a.json": must be a relative path')]),
        ({"type": "Localhost", "localhostProfile": "../a.json"}, [
            ("FieldValueInvalid", f"{C0}.localhostProfile", "Invalid value: \"../a.json\": must not contain '..'")]),
    ],
    ids=["runtime-default", "localhost", "no-type", "unknown-type", "localhost-without-file", "file-without-localhost",
         "absolute", "climbs-out"],
)  # fmt: skip
def test_validation_as_kubernetes_words_it(profile: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    assert validate_pod_seccomp(pod(container_profile=profile)["spec"]) == expected
    pod_level = [(t, p.replace(C0, POD), m) for t, p, m in expected]
    assert validate_pod_seccomp(pod(pod_profile=profile)["spec"]) == pod_level


def _denied(profile: dict[str, Any]) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ERRNO" and "args" not in r for n in r["names"]}


def test_runtime_default_denies_dangerous_calls_with_eperm_unless_a_capability_allows_them() -> None:
    profile = runtime_default(DEFAULT_CAPABILITIES, machine="x86_64")
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    denied = _denied(profile)
    assert {"mount", "unshare", "setns", "keyctl", "ptrace", "kexec_load", "init_module", "bpf", "reboot"} <= denied
    assert not {"read", "write", "clone", "execve", "chown", "socket"} & denied
    assert all(r["errnoRet"] == 1 for r in profile["syscalls"] if r["names"] != ["clone3"])
    clone_rules = [r for r in profile["syscalls"] if r["names"] == ["clone"]]
    assert {a["value"] for r in clone_rules for a in r["args"]} >= {0x10000000, 0x20000}  # CLONE_NEWUSER, NEWNS
    admin = _denied(runtime_default([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], machine="x86_64"))
    assert not {"mount", "unshare", "setns"} & admin and {"keyctl", "ptrace", "kexec_load"} <= admin


def test_spec_carries_the_profile_except_for_privileged_and_unconfined() -> None:
    assert "seccomp" not in spec()["linux"]
    assert spec(seccomp=SeccompProfile(type="RuntimeDefault"))["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    assert "seccomp" not in spec(seccomp=SeccompProfile(type="RuntimeDefault"), privileged=True)["linux"]
    local = {"defaultAction": "SCMP_ACT_LOG"}
    assert spec(seccomp=SeccompProfile(type="Localhost", localhost=local))["linux"]["seccomp"] == local
    assert ContainerConfig(name="c", args=["x"]).seccomp.type == "Unconfined"


def test_localhost_profile_in_dockers_form_becomes_the_oci_form() -> None:
    docker = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
              "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
              "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "io"},
                           {"name": "personality", "action": "SCMP_ACT_ALLOW",
                            "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]}  # fmt: skip
    assert from_profile_file(docker) == {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}],
    }  # fmt: skip
    with pytest.raises(ProfileError):
        from_profile_file({"syscalls": []})


async def test_which_profile_a_container_gets(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "log.json").write_text(json.dumps({"defaultAction": "SCMP_ACT_LOG"}))
    assert (await container_profile(pod(), pod()["spec"]["containers"][0], tmp_path)).type == "Unconfined"
    p = pod()
    assert (await container_profile(p, p["spec"]["containers"][0], tmp_path, runtime_default=True)).type == \
        "RuntimeDefault"  # fmt: skip
    p = pod({"type": "RuntimeDefault"}, {"type": "Localhost", "localhostProfile": "profiles/log.json"})
    got = await container_profile(p, p["spec"]["containers"][0], tmp_path)
    assert got == SeccompProfile(type="Localhost", localhost={"defaultAction": "SCMP_ACT_LOG"})
    p = pod({"type": "Localhost", "localhostProfile": "profiles/missing.json"})
    with pytest.raises(SeccompError, match=r'cannot load seccomp profile ".*/profiles/missing.json": open .*: no such '
                                           r"file or directory"):  # fmt: skip
        await container_profile(p, p["spec"]["containers"][0], tmp_path)
