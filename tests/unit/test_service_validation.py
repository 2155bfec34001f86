"""Service validation and the strategy's update rules, with Kubernetes' messages."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from skiff.api.defaults import apply_defaults
from skiff.api.service_validation import is_dns1035_label, validate_service, validate_service_update
from skiff.apiserver.service_strategy import drop_type_dependent_fields, normalize_cluster_ips, patch_allocated_values

Obj = dict[str, Any]


def svc(**spec: Any) -> Obj:
    obj: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}}
    obj["spec"] = {"ports": [{"port": 80}], **spec}
    apply_defaults("v1", "Service", obj)
    normalize_cluster_ips(obj, None)
    return obj


def messages(obj: Obj) -> list[str]:
    return [f"{path}: {msg}" for _t, path, msg in validate_service(obj)]


def test_valid_services() -> None:
    assert messages(svc(selector={"app": "web"})) == []
    assert messages(svc(type="NodePort")) == []
    assert messages(svc(type="LoadBalancer")) == []
    assert messages(svc(clusterIP="None", ports=[])) == []  # headless: ports optional
    assert messages(svc(type="ExternalName", externalName="example.com.", ports=[])) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"ports": []}, "spec.ports: Required value"),
        ({"ports": [{"port": 0}]}, "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
        (
            {"ports": [{"port": 70000}]},
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            {"ports": [{"port": 80, "protocol": "ICMP"}]},
            'spec.ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"',
        ),
        ({"ports": [{"port": 80, "name": "a"}, {"port": 81}]}, "spec.ports[1].name: Required value"),
        ({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}, 'spec.ports[1].name: Duplicate value: "a"'),
        (
            {"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]},
            'spec.ports[1]: Duplicate value: {"port":80,"protocol":"TCP"}',
        ),
        (
            {"ports": [{"port": 80, "targetPort": "http_x"}]},
            'spec.ports[0].targetPort: Invalid value: "http_x": must contain only alpha-numeric characters (a-z, 0-9), '
            "and hyphens (-)",
        ),
        (
            {"ports": [{"port": 80, "targetPort": "8080"}]},
            'spec.ports[0].targetPort: Invalid value: "8080": must contain at least one letter (a-z)',
        ),
        (
            {"ports": [{"port": 80, "targetPort": 70000}]},
            "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            {"type": "Bogus"},
            'spec.type: Unsupported value: "Bogus": supported values: "ClusterIP", "ExternalName", "LoadBalancer", '
            '"NodePort"',
        ),
        ({"type": "ExternalName"}, "spec.externalName: Required value"),
        (
            {"type": "NodePort", "clusterIP": "None"},
            "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
        ),
        (
            {"ports": [{"port": 80, "nodePort": 30001}]},
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        ),
        (
            {"clusterIP": "10.43.0.300"},
            'spec.clusterIPs[0]: Invalid value: "10.43.0.300": must be a valid IP address, (e.g. 10.9.8.7 or '
            "2001:db8::ffff)",
        ),
        (
            {"clusterIPs": ["10.43.0.5"]},
            'spec.clusterIPs: Invalid value: ["10.43.0.5"]: must be empty when `clusterIP` is not specified',
        ),
        (
            {"externalTrafficPolicy": "Cluster"},
            'spec.externalTrafficPolicy: Invalid value: "Cluster": may only be set for externally-accessible services',
        ),
        (
            {"sessionAffinity": "Sticky"},
            'spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None"',
        ),
        (
            {"externalIPs": ["127.0.0.1"]},
            'spec.externalIPs[0]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)',
        ),
        ({"selector": {"app": "-bad-"}}, "spec.selector: Invalid value"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else "",
)
def test_invalid_services(spec: Obj, expected: str) -> None:
    found = messages(svc(**spec))
    assert any(m.startswith(expected) for m in found), found


def test_externalname_may_not_have_cluster_ips() -> None:
    obj = svc(type="ExternalName", externalName="example.com", clusterIP="10.43.0.5")
    assert "spec.clusterIPs: Forbidden: may not be set for ExternalName services" in messages(obj)


def test_service_names_are_dns1035_labels() -> None:
    assert is_dns1035_label("web-1") == []
    assert is_dns1035_label("1web")[0].startswith("a DNS-1035 label must consist of lower case")


def test_cluster_ip_may_not_change() -> None:
    old = svc(clusterIP="10.43.0.5")
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.43.0.6"
    normalize_cluster_ips(new, old)
    errs = [f"{p}: {m}" for _t, p, m in validate_service_update(new, old)]
    assert errs == ['spec.clusterIPs[0]: Invalid value: ["10.43.0.6"]: may not change once set']


def test_replace_without_allocated_values_keeps_them() -> None:
    old = svc(type="NodePort", clusterIP="10.43.0.5", ports=[{"name": "http", "port": 80, "nodePort": 30080}])
    new = svc(type="NodePort", ports=[{"name": "http", "port": 80}])  # a manifest as the user wrote it
    normalize_cluster_ips(new, old)
    patch_allocated_values(new, old)
    assert new["spec"]["clusterIP"] == "10.43.0.5" and new["spec"]["clusterIPs"] == ["10.43.0.5"]
    assert new["spec"]["ports"][0]["nodePort"] == 30080
    assert validate_service_update(new, old) == []


def test_type_change_drops_what_the_new_type_does_not_use() -> None:
    old = svc(type="NodePort", clusterIP="10.43.0.5", ports=[{"port": 80, "nodePort": 30080}])
    old["spec"].update(ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack")
    to_cluster_ip = copy.deepcopy(old)
    to_cluster_ip["spec"]["type"] = "ClusterIP"
    drop_type_dependent_fields(to_cluster_ip, old)
    assert "nodePort" not in to_cluster_ip["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in to_cluster_ip["spec"]
    assert validate_service_update(to_cluster_ip, old) == []
    to_external = copy.deepcopy(old)
    to_external["spec"].update(type="ExternalName", externalName="example.com")
    drop_type_dependent_fields(to_external, old)
    for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        assert key not in to_external["spec"]
    assert validate_service_update(to_external, old) == []
