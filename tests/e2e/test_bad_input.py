"""Bad requests over raw HTTPS: the right Status code and reason, a message a person can act on, nothing stored."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.e2e.cluster import Server

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
        },
    },
}


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    return server.create_namespace(f"bad-{uuid.uuid4().hex[:8]}")


def _status(result: tuple[int, Any, dict[str, str]], code: int, reason: str, *words: str) -> str:
    """Checks a Status answer; returns its message."""
    got, body, headers = result
    assert got == code, body
    assert isinstance(body, dict), body
    assert body["kind"] == "Status" and body["apiVersion"] == "v1", body
    assert body["status"] == "Failure" and body["code"] == code and body["reason"] == reason, body
    assert headers.get("Content-Type", "").startswith("application/json")
    message = str(body["message"])
    for w in words:
        assert w.lower() in message.lower(), f"{w!r} not in {message!r}"
    return message


def _names(server: Server, path: str) -> list[str]:
    code, body, _ = server.raw("GET", path)
    assert code == 200, body
    return sorted(i["metadata"]["name"] for i in body["items"])


def _cms(server: Server, ns: str) -> list[str]:
    return _names(server, f"/api/v1/namespaces/{ns}/configmaps")


def _deps(server: Server, ns: str) -> list[str]:
    return _names(server, f"/apis/apps/v1/namespaces/{ns}/deployments")


def _fresh_cm(server: Server, ns: str, **data: str) -> tuple[str, dict[str, Any]]:
    name = f"cm-{uuid.uuid4().hex[:6]}"
    code, body, _ = server.raw(
        "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": name}, "data": data}
    )
    assert code == 201, body
    return name, dict(body)


# ------------------------------------------------------------------- decoding
def test_malformed_json(server: Server, ns: str) -> None:
    before = _cms(server, ns)
    result = server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", b'{"metadata": {"name": "x"},')
    _status(result, 400, "BadRequest", "json")
    assert _cms(server, ns) == before


def test_malformed_yaml(server: Server, ns: str) -> None:
    before = _cms(server, ns)
    body = b"metadata:\n  name: x\n data: [unclosed\n"
    result = server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", body, content_type="application/yaml")
    _status(result, 400, "BadRequest", "yaml")
    assert _cms(server, ns) == before


def test_yaml_body_is_accepted(server: Server, ns: str) -> None:
    """The control for the one above: well-formed YAML creates the object."""
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n"
    code, obj, _ = server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", body, content_type="application/yaml")
    assert code == 201 and obj["data"] == {"a": "b"}


def test_body_not_an_object(server: Server, ns: str) -> None:
    before = _cms(server, ns)
    _status(server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", b"[1, 2]"), 400, "BadRequest")
    _status(server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", b""), 400, "BadRequest")
    assert _cms(server, ns) == before


@pytest.mark.parametrize(
    ("api_version", "kind", "words"),
    [
        ("apps/v1", "ConfigMap", ("apps/v1",)),
        ("v2", "ConfigMap", ("v2",)),
        ("v1", "Secret", ("Secret", "ConfigMap")),
    ],
)
def test_wrong_api_version_or_kind_for_the_url(
    server: Server, ns: str, api_version: str, kind: str, words: tuple[str, ...]
) -> None:
    before = _cms(server, ns)
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "mismatch"}, "data": {"a": "b"}}
    _status(server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", body), 400, "BadRequest", *words)
    assert _cms(server, ns) == before


def test_deployment_sent_to_configmaps(server: Server, ns: str) -> None:
    before = _cms(server, ns)
    _status(server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", DEPLOYMENT), 400, "BadRequest", "apps/v1")
    assert _cms(server, ns) == before and _deps(server, ns) == []


def test_namespace_in_body_does_not_match_url(server: Server, ns: str) -> None:
    before = _cms(server, ns)
    body = {"metadata": {"name": "elsewhere", "namespace": "default"}, "data": {"a": "b"}}
    _status(server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", body), 400, "BadRequest", "namespace")
    assert _cms(server, ns) == before
    assert "elsewhere" not in _cms(server, "default")


def test_name_in_body_does_not_match_url(server: Server, ns: str) -> None:
    name, obj = _fresh_cm(server, ns, a="b")
    obj["metadata"]["name"] = "other-name"
    obj["data"] = {"a": "changed"}
    msg = _status(server.raw("PUT", f"/api/v1/namespaces/{ns}/configmaps/{name}", obj), 400, "BadRequest", "name")
    assert "other-name" in msg and name in msg
    assert server.raw("GET", f"/api/v1/namespaces/{ns}/configmaps/{name}")[1]["data"] == {"a": "b"}
    assert "other-name" not in _cms(server, ns)


def test_unknown_field_with_strict_validation(server: Server, ns: str) -> None:
    body = json.loads(json.dumps(DEPLOYMENT))
    body["metadata"]["name"] = "strict"
    body["spec"]["replicaz"] = 3
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    _status(server.raw("POST", f"{path}?fieldValidation=Strict", body), 400, "BadRequest", "unknown field", "replicaz")
    assert _deps(server, ns) == []
    # Warn (the default) stores it without the field and says so in a Warning header
    code, obj, headers = server.raw("POST", f"{path}?fieldValidation=Warn", body)
    assert code == 201 and "replicaz" not in obj["spec"]
    assert "replicaz" in headers.get("Warning", "")
    assert server.raw("DELETE", f"{path}/strict")[0] == 200


def test_wrong_field_type(server: Server, ns: str) -> None:
    body = json.loads(json.dumps(DEPLOYMENT))
    body["metadata"]["name"] = "typed"
    body["spec"]["replicas"] = "three"
    _status(
        server.raw("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body),
        400,
        "BadRequest",
        "replicas",
    )
    assert _deps(server, ns) == []
    # wrong type in configmap data (must be strings)
    before = _cms(server, ns)
    _status(
        server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "typed"}, "data": {"n": 1}}),
        400,
        "BadRequest",
        "data",
    )
    assert _cms(server, ns) == before


def test_body_over_3_mib(server: Server, ns: str) -> None:
    before = _cms(server, ns)
    big = {"metadata": {"name": "huge"}, "data": {"blob": "x" * (3 * 1024 * 1024 + 10)}}
    _status(server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", big), 413, "RequestEntityTooLarge", "large")
    assert _cms(server, ns) == before


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize("name", ["Bad_Name", "UPPER", "-leading-dash", "a" * 254])
def test_invalid_name(server: Server, ns: str, name: str) -> None:
    before = _cms(server, ns)
    msg = _status(
        server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": name}}),
        422,
        "Invalid",
        "metadata.name",
    )
    assert 'ConfigMap "' in msg and "is invalid" in msg
    assert _cms(server, ns) == before


def test_invalid_name_details(server: Server, ns: str) -> None:
    code, body, _ = server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "Bad_Name"}})
    assert code == 422
    details = body["details"]
    assert details["name"] == "Bad_Name" and details["kind"] == "ConfigMap"
    assert {"reason": "FieldValueInvalid", "field": "metadata.name"}.items() <= details["causes"][0].items()
    assert "RFC 1123" in body["message"]


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"app": "has space"}, "metadata.labels"),
        ({"app": "x" * 64}, "metadata.labels"),
        ({"bad key!": "v"}, "metadata.labels"),
    ],
)
def test_invalid_labels(server: Server, ns: str, labels: dict[str, str], field: str) -> None:
    before = _cms(server, ns)
    body = {"metadata": {"name": "labelled", "labels": labels}}
    _status(server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", body), 422, "Invalid", field)
    assert _cms(server, ns) == before


def test_invalid_label_on_update_changes_nothing(server: Server, ns: str) -> None:
    name, obj = _fresh_cm(server, ns, a="b")
    patch = {"metadata": {"labels": {"ok": "yes", "bad": "no spaces allowed"}}, "data": {"a": "changed"}}
    _status(
        server.raw(
            "PATCH", f"/api/v1/namespaces/{ns}/configmaps/{name}", patch, content_type="application/merge-patch+json"
        ),
        422,
        "Invalid",
        "metadata.labels",
    )
    now = server.raw("GET", f"/api/v1/namespaces/{ns}/configmaps/{name}")[1]
    assert now["data"] == {"a": "b"} and not now["metadata"].get("labels")
    assert now["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_invalid_deployment_spec(server: Server, ns: str) -> None:
    body = json.loads(json.dumps(DEPLOYMENT))
    body["metadata"]["name"] = "mismatched"
    body["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    _status(
        server.raw("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body),
        422,
        "Invalid",
        "spec.template.metadata.labels",
        "selector",
    )
    assert _deps(server, ns) == []


# --------------------------------------------------------------- routing, media
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/{ns}/widgets",
        "/apis/example.com/v1/namespaces/{ns}/widgets",
        "/apis/apps/v2/namespaces/{ns}/deployments",
        "/api/v1/namespaces/{ns}/configmaps/x/nosuchsubresource",
        "/nothing/here",
    ],
)
def test_unknown_resource_path(server: Server, ns: str, path: str) -> None:
    p = path.format(ns=ns)
    _status(server.raw("GET", p), 404, "NotFound")
    _status(server.raw("POST", p, {"metadata": {"name": "x"}}), 404, "NotFound")


def test_unsupported_content_type(server: Server, ns: str) -> None:
    before = _cms(server, ns)
    result = server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", b"name,value\nx,1\n", content_type="text/csv")
    _status(result, 415, "UnsupportedMediaType", "text/csv", "application/json")
    assert _cms(server, ns) == before


def test_unsupported_patch_type(server: Server, ns: str) -> None:
    name, obj = _fresh_cm(server, ns, a="b")
    path = f"/api/v1/namespaces/{ns}/configmaps/{name}"
    for ct in ("application/json", "text/plain", "application/xml"):
        msg = _status(server.raw("PATCH", path, {"data": {"a": "c"}}, content_type=ct), 415, "UnsupportedMediaType")
        assert "application/merge-patch+json" in msg
    now = server.raw("GET", path)[1]
    assert now["data"] == {"a": "b"} and now["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_malformed_patches(server: Server, ns: str) -> None:
    name, _ = _fresh_cm(server, ns, a="b")
    path = f"/api/v1/namespaces/{ns}/configmaps/{name}"
    _status(server.raw("PATCH", path, b"{not json", content_type="application/merge-patch+json"), 400, "BadRequest")
    # a JSON patch must be a list of operations
    _status(server.raw("PATCH", path, {"op": "add"}, content_type="application/json-patch+json"), 400, "BadRequest")
    # an operation that cannot apply is 422, as Kubernetes answers for a JSON patch that fails
    ops: list[dict[str, Any]] = [{"op": "frobnicate", "path": "/data/a"}]
    _status(server.raw("PATCH", path, ops, content_type="application/json-patch+json"), 422, "Invalid")
    # a failed test operation changes nothing (Kubernetes answers 422 Invalid)
    ops = [{"op": "test", "path": "/data/a", "value": "nope"}, {"op": "replace", "path": "/data/a", "value": "c"}]
    code, body, _ = server.raw("PATCH", path, ops, content_type="application/json-patch+json")
    assert code == 422 and body["reason"] == "Invalid", body
    assert server.raw("GET", path)[1]["data"] == {"a": "b"}


# ----------------------------------------------------------- conflicts, auth
def test_stale_resource_version_on_put(server: Server, ns: str) -> None:
    name, stale = _fresh_cm(server, ns, v="0")
    path = f"/api/v1/namespaces/{ns}/configmaps/{name}"
    code, fresh, _ = server.raw("PATCH", path, {"data": {"v": "1"}}, content_type="application/merge-patch+json")
    assert code == 200
    stale["data"] = {"v": "stale"}
    msg = _status(server.raw("PUT", path, stale), 409, "Conflict", "the object has been modified", name)
    assert "latest version" in msg
    now = server.raw("GET", path)[1]
    assert now["data"] == {"v": "1"} and now["metadata"]["resourceVersion"] == fresh["metadata"]["resourceVersion"]
    # a resourceVersion that is not a number is refused, not silently ignored
    stale["metadata"]["resourceVersion"] = "abc"
    code, body, _ = server.raw("PUT", path, stale)
    assert code in (400, 409, 422) and body["kind"] == "Status", body
    assert server.raw("GET", path)[1]["data"] == {"v": "1"}


def test_anonymous_request_without_client_cert(server: Server, ns: str) -> None:
    _status(server.raw("GET", f"/api/v1/namespaces/{ns}/configmaps", auth=False), 401, "Unauthorized")
    before = _cms(server, ns)
    result = server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "anon"}}, auth=False)
    _status(result, 401, "Unauthorized")
    assert _cms(server, ns) == before
    # a wrong bearer token is no better
    result = server.raw(
        "GET", f"/api/v1/namespaces/{ns}/configmaps", auth=False, headers={"Authorization": "Bearer not-a-token"}
    )
    _status(result, 401, "Unauthorized")
    # health endpoints stay open
    assert server.raw("GET", "/readyz", auth=False)[0] == 200


def test_method_not_allowed(server: Server, ns: str) -> None:
    _status(
        server.raw("PUT", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "x"}}), 405, "MethodNotAllowed"
    )


def test_strict_validation_on_update_and_patch(server: Server, ns: str) -> None:
    name, obj = _fresh_cm(server, ns, a="b")
    path = f"/api/v1/namespaces/{ns}/configmaps/{name}"
    obj["datta"] = {"typo": "x"}
    obj["data"] = {"a": "changed"}
    _status(server.raw("PUT", f"{path}?fieldValidation=Strict", obj), 400, "BadRequest", "unknown field", "datta")
    patch = {"data": {"a": "changed"}, "metadata": {"labelz": {"x": "y"}}}
    _status(
        server.raw("PATCH", f"{path}?fieldValidation=Strict", patch, content_type="application/merge-patch+json"),
        400,
        "BadRequest",
        "unknown field",
        "labelz",
    )
    now = server.raw("GET", path)[1]
    assert now["data"] == {"a": "b"} and now["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    _status(
        server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Bogus", {"metadata": {"name": "fv"}}),
        400,
        "BadRequest",
        "fieldValidation",
    )
    assert "fv" not in _cms(server, ns)


def test_bad_query_parameters(server: Server, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    _status(server.raw("GET", f"{base}?labelSelector=a%20in%20b"), 400, "BadRequest")
    _status(server.raw("GET", f"{base}?fieldSelector=data.x%3Dy"), 400, "BadRequest", "data.x")
    _status(server.raw("GET", f"{base}?limit=ten"), 400, "BadRequest", "limit")
    _status(server.raw("GET", f"{base}?limit=1&continue=garbage"), 400, "BadRequest", "continue")
    _status(server.raw("GET", f"{base}?resourceVersion=abc"), 400, "BadRequest", "resourceVersion")
    before = _cms(server, ns)
    _status(server.raw("POST", f"{base}?dryRun=Some", {"metadata": {"name": "dry"}}), 400, "BadRequest", "dryRun")
    assert _cms(server, ns) == before


def test_update_of_missing_object_and_wrong_uid_precondition(server: Server, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/configmaps"
    before = _cms(server, ns)
    _status(
        server.raw("PUT", f"{base}/ghost", {"metadata": {"name": "ghost"}, "data": {"a": "b"}}),
        404,
        "NotFound",
        "ghost",
    )
    assert _cms(server, ns) == before
    name, _ = _fresh_cm(server, ns, a="b")
    pre = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"},
    }
    _status(server.raw("DELETE", f"{base}/{name}", pre), 409, "Conflict", "precondition", "uid")
    assert name in _cms(server, ns)


@pytest.mark.parametrize(
    ("method", "suffix", "content_type", "kind"),
    [
        ("POST", "", "application/json", "CreateOptions"),
        ("PUT", "/fm", "application/json", "UpdateOptions"),
        ("PATCH", "/fm", "application/merge-patch+json", "PatchOptions"),
        ("PATCH", "/fm", "application/apply-patch+yaml", "PatchOptions"),
    ],
)
def test_bad_field_manager(server: Server, ns: str, method: str, suffix: str, content_type: str, kind: str) -> None:
    """`?fieldManager=` over 128 bytes or with a non-printable character: 422 on every write verb, nothing stored."""
    base = f"/api/v1/namespaces/{ns}/configmaps"
    if server.raw("GET", f"{base}/fm")[0] == 404:
        assert server.raw("POST", base, {"metadata": {"name": "fm"}, "data": {"k": "v"}})[0] == 201
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fm" if suffix else "fm-new"},
            "data": {"k": "changed"}}  # fmt: skip
    long_name = "m" * 129
    message = _status(server.raw(method, f"{base}{suffix}?fieldManager={long_name}", body, content_type=content_type),
                      422, "Invalid")  # fmt: skip
    assert message == f'{kind}.meta.k8s.io "" is invalid: fieldManager: Too long: may not be more than 128 bytes'
    message = _status(server.raw(method, f"{base}{suffix}?fieldManager=bad%07name", body, content_type=content_type),
                      422, "Invalid")  # fmt: skip
    assert message == (f'{kind}.meta.k8s.io "" is invalid: fieldManager: Invalid value: "bad\\u0007name": '
                       "invalid character U+0007 (at position 3)")  # fmt: skip
    assert _names(server, base).count("fm-new") == 0
    assert server.raw("GET", f"{base}/fm")[1]["data"] == {"k": "v"}
    force = "&force=true" if "apply" in content_type else ""
    ok = server.raw(method, f"{base}{suffix}?fieldManager={'m' * 128}{force}", body, content_type=content_type)
    assert ok[0] in (200, 201), ok
    if not suffix:
        server.raw("DELETE", f"{base}/fm-new")
    else:
        server.raw("PUT", f"{base}/fm", {"metadata": {"name": "fm"}, "data": {"k": "v"}})


def test_apply_needs_a_field_manager(server: Server, ns: str) -> None:
    message = _status(server.raw("PATCH", f"/api/v1/namespaces/{ns}/configmaps/applied",
                                 {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}},
                                 content_type="application/apply-patch+yaml"), 422, "Invalid")  # fmt: skip
    assert (
        message == 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )
