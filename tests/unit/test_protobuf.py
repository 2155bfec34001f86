"""Decoding kubectl's protobuf request bodies, from bytes built by hand or captured from kubectl 1.37."""

from __future__ import annotations

import base64

import pytest

from skiff.api.errors import BadRequest, UnsupportedMediaType
from skiff.api.protobuf import MAGIC, decode_k8s_protobuf, decode_message, supported_kinds
from skiff.api.protobuf_schema import MESSAGES, SCALARS, SPECIALS, TOP_LEVEL, parse_field
from skiff.api.protobuf_wire import WireError, as_int32, as_int64, iter_fields, read_varint

# --- a minimal encoder, the mirror of what gogo-protobuf writes -------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def vi(number: int, value: int) -> bytes:
    """A varint field (negative values sign-extended to 64 bits, as Go does)."""
    return varint(number << 3) + varint(value)


def ld(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def entry(number: int, key: str, value: bytes | str) -> bytes:
    """One map entry."""
    return ld(number, ld(1, key) + ld(2, value))


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return MAGIC + ld(1, ld(1, api_version) + ld(2, kind)) + ld(2, raw) + ld(3, "") + ld(4, "")


def meta(name: str = "", namespace: str = "", *extra: bytes) -> bytes:
    """ObjectMeta as Go writes it: every non-pointer field, zero or not, and an empty creationTimestamp."""
    zeros = ld(4, "") + ld(5, "") + ld(6, "") + vi(7, 0) + ld(8, b"")
    return ld(1, name) + ld(2, "") + ld(3, namespace) + zeros + b"".join(extra)


def int_or_string(value: int | str) -> bytes:
    if isinstance(value, str):
        return vi(1, 1) + vi(2, 0) + ld(3, value)
    return vi(1, 0) + vi(2, value) + ld(3, "")


# --- golden bodies captured with `kubectl -v=8` (kubectl 1.37.1) -------------------------------------------

# kubectl create configmap c --from-literal=a=b -n default
KUBECTL_CONFIGMAP = bytes.fromhex(
    "6b3873000a0f0a0276311209436f6e6669674d617012220a180a016312001a0764656661756c7422002a0032003800420012"
    "060a01611201621a002200"
)

# kubectl create deployment web --image=nginx --port=80 --replicas=0 -n default
KUBECTL_DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412bf010a260a0377656212001a0764656661756c742200"
    "2a003200380042005a0a0a0361707012037765621286010800120c0a0a0a0361707012037765621a6c0a1c0a0012001a0022"
    "002a003200380042005a0a0a036170701203776562124c122e0a056e67696e7812056e67696e782a00320a0a001000185022"
    "002a0042006a007200800100880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022"
    "020a00280038001a0c0800100018002000280038001a002200"
)

# kubectl auth can-i list deployments.apps -n kube-system
KUBECTL_SSAR = bytes.fromhex(
    "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a6563744163636573735265"
    "76696577124c0a100a0012001a0022002a00320038004200122e0a2c0a0b6b7562652d73797374656d12046c6973741a046170"
    "707322002a0b6465706c6f796d656e747332003a001a08080012001a0020001a002200"
)


def test_kubectl_configmap_body() -> None:
    assert decode_k8s_protobuf(KUBECTL_CONFIGMAP) == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "c", "namespace": "default"},
        "data": {"a": "b"},
    }


def test_kubectl_deployment_body() -> None:
    labels = {"app": "web"}
    assert decode_k8s_protobuf(KUBECTL_DEPLOYMENT) == {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {}}
                    ]
                },
            },
            "strategy": {},
        },
        "status": {},
    }


def test_kubectl_self_subject_access_review_body() -> None:
    assert decode_k8s_protobuf(KUBECTL_SSAR) == {
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


# --- rendering rules ---------------------------------------------------------------------------------------


def test_secret_bytes_are_base64_and_empty_values_kept() -> None:
    raw = ld(1, meta("s")) + entry(2, "bin", b"\x00\xff\x10") + entry(2, "empty", b"") + ld(3, "Opaque")
    obj = decode_k8s_protobuf(envelope("v1", "Secret", raw))
    assert obj["data"] == {"bin": base64.b64encode(b"\x00\xff\x10").decode(), "empty": ""}
    assert obj["type"] == "Opaque"
    assert obj["metadata"] == {"name": "s"}


def test_map_entry_without_value_is_the_zero_value() -> None:
    raw = ld(1, meta("c")) + ld(2, ld(1, "k"))
    assert decode_k8s_protobuf(envelope("v1", "ConfigMap", raw))["data"] == {"k": ""}


def test_pointer_zero_is_kept_and_omitempty_zero_dropped() -> None:
    spec = vi(1, 0) + vi(5, 0) + vi(7, 0) + ld(4, b"") + vi(6, 0)
    obj = decode_message("DeploymentSpec", spec)
    # replicas and revisionHistoryLimit are pointers; minReadySeconds and paused are omitempty values.
    # template has no omitempty and is a struct: Go writes its zero value when it is missing.
    assert obj == {"replicas": 0, "strategy": {}, "revisionHistoryLimit": 0, "template": {}}


def test_bool_pointer_false_is_kept() -> None:
    raw = ld(1, meta("sa")) + vi(4, 0)
    obj = decode_k8s_protobuf(envelope("v1", "ServiceAccount", raw))
    assert obj["automountServiceAccountToken"] is False


def test_non_omitempty_fields_render_when_absent() -> None:
    assert decode_message("ContainerPort", b"") == {"containerPort": 0}
    assert decode_message("PolicyRule", ld(2, "")) == {"verbs": None, "apiGroups": [""]}
    assert decode_message("GRPCAction", vi(1, 9000)) == {"port": 9000, "service": None}
    assert decode_message("GRPCAction", vi(1, 9000) + ld(2, "")) == {"port": 9000, "service": ""}


def test_cluster_role_without_rules_has_null_rules() -> None:
    selector = ld(1, entry(1, "a", "b"))
    raw = ld(1, meta("cr")) + ld(3, selector)
    obj = decode_k8s_protobuf(envelope("rbac.authorization.k8s.io/v1", "ClusterRole", raw))
    assert obj["rules"] is None
    assert obj["aggregationRule"] == {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}


def test_time_fields() -> None:
    created = vi(1, 1704164645) + vi(2, 123)
    m = decode_message("ObjectMeta", ld(1, "x") + ld(8, created) + ld(9, b""))
    assert m == {"name": "x", "creationTimestamp": "2024-01-02T03:04:05Z"}
    # Go's zero time, written out as seconds, is the zero time too.
    assert decode_message("ObjectMeta", ld(8, vi(1, -62135596800))) == {}
    # A `!` Time (TokenRequestStatus.expirationTimestamp) renders the zero time as null.
    assert decode_message("TokenRequestStatus", ld(1, "") + ld(2, b"")) == {"token": "", "expirationTimestamp": None}
    # A pointer struct without omitempty is null when absent.
    assert decode_message("TokenRequestSpec", b"") == {
        "audiences": None,
        "expirationSeconds": None,
        "boundObjectRef": None,
    }


def test_int_or_string() -> None:
    assert decode_message("RollingUpdateDeployment", ld(1, int_or_string("25%")) + ld(2, int_or_string(1))) == {
        "maxUnavailable": "25%",
        "maxSurge": 1,
    }


def test_quantity_map() -> None:
    spec = ld(1, ld(1, "cpu") + ld(2, ld(1, "500m"))) + ld(1, ld(1, "pods") + ld(2, ld(1, "2"))) + ld(2, "BestEffort")
    obj = decode_k8s_protobuf(envelope("v1", "ResourceQuota", ld(1, meta("q")) + ld(2, spec) + ld(3, b"")))
    assert obj["spec"] == {"hard": {"cpu": "500m", "pods": "2"}, "scopes": ["BestEffort"]}
    assert obj["status"] == {}


def test_negative_integers() -> None:
    obj = decode_k8s_protobuf(envelope("scheduling.k8s.io/v1", "PriorityClass", ld(1, meta("p")) + vi(2, -5)))
    assert obj["value"] == -5
    assert decode_message("PodSecurityContext", vi(2, -1)) == {"runAsUser": -1}


def test_repeated_scalars_packed_and_unpacked() -> None:
    unpacked = vi(4, 1) + vi(4, 2)
    packed = ld(4, varint(3) + varint(4))
    assert decode_message("PodSecurityContext", unpacked + packed) == {"supplementalGroups": [1, 2, 3, 4]}


def test_inline_structs_merge_into_parent() -> None:
    selector = ld(1, ld(1, "cm")) + ld(2, "key") + vi(3, 1)
    assert decode_message("ConfigMapKeySelector", selector) == {"name": "cm", "key": "key", "optional": True}
    probe = ld(1, ld(1, ld(1, "true"))) + vi(2, 0) + vi(4, 10)
    assert decode_message("Probe", probe) == {"exec": {"command": ["true"]}, "periodSeconds": 10}
    backend = ld(4, ld(1, "svc") + ld(2, ld(1, "") + vi(2, 8080)))
    rule = ld(1, "foo.com") + ld(2, ld(1, ld(1, ld(1, "/") + ld(3, "Prefix") + ld(2, backend))))
    assert decode_message("IngressRule", rule) == {
        "host": "foo.com",
        "http": {
            "paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"number": 8080}}}}
            ]
        },
    }


def test_string_list_values() -> None:
    info = ld(1, "alice") + ld(3, "devs") + ld(4, ld(1, "scopes") + ld(2, ld(1, "a") + ld(1, "b")))
    status = ld(1, info)
    body = envelope("authentication.k8s.io/v1beta1", "SelfSubjectReview", ld(1, meta()) + ld(2, status))
    obj = decode_k8s_protobuf(body)
    assert obj["status"] == {"userInfo": {"username": "alice", "groups": ["devs"], "extra": {"scopes": ["a", "b"]}}}


def test_managed_fields_raw_json() -> None:
    managed = ld(1, "kubectl") + ld(2, "Update") + ld(6, "FieldsV1") + ld(7, ld(1, b'{"f:data":{}}'))
    assert decode_message("ObjectMeta", ld(1, "x") + ld(17, managed))["managedFields"] == [
        {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}
    ]


def test_unknown_fields_are_skipped() -> None:
    fixed32 = varint(101 << 3 | 5) + b"\x00\x00\x00\x00"
    raw = ld(1, meta("c")) + ld(99, "future") + vi(100, 7) + fixed32 + entry(2, "a", "b")
    assert decode_k8s_protobuf(envelope("v1", "ConfigMap", raw)) == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "c"},
        "data": {"a": "b"},
    }


def test_invalid_utf8_is_replaced_like_go() -> None:
    assert decode_message("LocalObjectReference", ld(1, b"a\xffb")) == {"name": "a\ufffdb"}


def test_embedded_json_content_type() -> None:
    type_meta = ld(1, ld(1, "v1") + ld(2, "ConfigMap"))
    body = MAGIC + type_meta + ld(2, b'{"metadata":{"name":"j"}}') + ld(4, "application/json")
    assert decode_k8s_protobuf(body) == {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "j"}}


# --- errors ------------------------------------------------------------------------------------------------


def test_unknown_kind_is_unsupported_media_type() -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        decode_k8s_protobuf(envelope("apps/v1", "StatefulSet", ld(1, meta("s"))))
    err = info.value
    assert err.code == 415
    assert "StatefulSet" in err.message and "JSON" in err.message
    assert err.status()["reason"] == "UnsupportedMediaType"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"kind":"ConfigMap"}', id="no-magic"),
        pytest.param(MAGIC + b"\x0a\x05ab", id="length-past-end"),
        pytest.param(MAGIC + b"\x0a", id="truncated-length"),
        pytest.param(MAGIC + ld(2, b""), id="no-type-meta"),
        pytest.param(envelope("v1", "ConfigMap", b"\x0b"), id="group-wire-type"),
        pytest.param(envelope("v1", "ConfigMap", vi(1, 5)), id="varint-where-message-belongs"),
        pytest.param(envelope("v1", "ConfigMap", ld(1, vi(1, 3))), id="varint-where-string-belongs"),
        pytest.param(envelope("v1", "ConfigMap", ld(1, ld(8, vi(1, 10**15)))), id="time-out-of-range"),
        pytest.param(envelope("v1", "ConfigMap", b"\x80" * 11), id="overlong-varint"),
    ],
)
def test_malformed_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        decode_k8s_protobuf(body)
    assert info.value.code == 400


def test_content_encoding_is_unsupported() -> None:
    body = MAGIC + ld(1, ld(1, "v1") + ld(2, "ConfigMap")) + ld(2, b"x") + ld(3, "gzip")
    with pytest.raises(UnsupportedMediaType):
        decode_k8s_protobuf(body)


# --- the wire layer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32, 2**63, 2**64 - 1])
def test_varint_round_trip(n: int) -> None:
    encoded = varint(n)
    assert read_varint(encoded, 0) == (n, len(encoded))


def test_signed_reinterpretation() -> None:
    assert as_int64(2**64 - 1) == -1
    assert as_int32(2**64 - 2) == -2
    assert as_int32(2**31) == -(2**31)


def test_iter_fields_rejects_field_zero() -> None:
    with pytest.raises(WireError):
        list(iter_fields(b"\x02\x00"))


# --- the tables themselves ---------------------------------------------------------------------------------


def test_every_type_resolves_and_names_are_unique() -> None:
    def json_names(message: str) -> list[str]:
        names: list[str] = []
        for field in MESSAGES[message].values():
            names.extend(json_names(field.type) if field.inline else [field.name])
        return names

    for message, fields in MESSAGES.items():
        for number, field in fields.items():
            assert number > 0
            assert field.type in SCALARS or field.type in SPECIALS or field.type in MESSAGES, (message, field)
            assert not (field.map and field.repeated)
        names = json_names(message)
        assert len(names) == len(set(names)), message


def test_top_level_kinds() -> None:
    for (api_version, kind), message in TOP_LEVEL.items():
        assert message in MESSAGES
        assert MESSAGES[message][1] == parse_field("metadata:ObjectMeta"), (api_version, kind)
    assert ("v1", "Secret") in supported_kinds()
    assert ("authentication.k8s.io/v1alpha1", "SelfSubjectReview") in supported_kinds()


def test_field_spec_syntax() -> None:
    assert parse_field("replicas:int32*").keep_zero
    assert parse_field("verbs:[string]!").always
    field = parse_field("service:string?")
    assert (field.keep_zero, field.always, field.nullable) == (True, True, True)
    assert parse_field("...:LocalObjectReference").inline
    assert parse_field("hard:{Quantity}").map
    with pytest.raises(ValueError):
        parse_field("bad spec")


# Fields of the 1.37 API that the tables leave out: TokenRequestSpec.attestations, which no kubectl
# command sets.
_NOT_COVERED = {"TokenRequestSpec": {"attestations"}}


def test_tables_cover_the_kubernetes_1_37_json_fields() -> None:
    """Every message that has a `kubernetes` client model has exactly the model's JSON fields."""
    models = pytest.importorskip("kubernetes.client.models")

    def json_names(message: str) -> set[str]:
        names: set[str] = set()
        for field in MESSAGES[message].values():
            names |= json_names(field.type) if field.inline else {field.name}
        return names

    compared = 0
    for message in MESSAGES:
        model = getattr(models, "V1" + message, None)
        if model is None:
            continue
        compared += 1
        expected = set(model.attribute_map.values()) - _NOT_COVERED.get(message, set())
        ours = json_names(message)
        # The client's models drop apiVersion/kind attributes on some reference types; compare the rest.
        assert expected - {"apiVersion", "kind"} == ours - {"apiVersion", "kind"}, message
    assert compared > 150
