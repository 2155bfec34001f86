"""Which handler answers a path, with the REST routes dispatched ahead of aiohttp's router (`apiserver/fastroute.py`).

A client must not be able to tell the fast dispatch from the router: REST paths of the core and named groups
reach the generic handlers, metrics.k8s.io stays with its own, discovery paths stay discovery, and what the
fast path leaves to the router (percent-escapes) answers as it always did.
"""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.cluster import Server

pytestmark = pytest.mark.e2e


def test_paths_reach_the_handler_the_router_would_choose(server: Server) -> None:
    ns = f"routing-{uuid.uuid4().hex[:6]}"
    server.create_namespace(ns)
    code, body, _ = server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "a"}})
    assert code == 201, body

    code, body, _ = server.raw("GET", f"/api/v1/namespaces/{ns}/configmaps/a")  # core group
    assert (code, body["kind"], body["metadata"]["name"]) == (200, "ConfigMap", "a")
    code, body, _ = server.raw("GET", f"/apis/apps/v1/namespaces/{ns}/deployments")  # a named group
    assert (code, body["kind"]) == (200, "DeploymentList")
    code, body, _ = server.raw("GET", "/apis/metrics.k8s.io/v1beta1/nodes")  # its own handler, not the store's
    assert (code, body["kind"]) == (200, "NodeMetricsList")
    code, body, _ = server.raw("GET", "/apis/apps/v1/")  # discovery
    assert (code, body["kind"], body["groupVersion"]) == (200, "APIResourceList", "apps/v1")
    code, body, _ = server.raw("GET", "/api/v1/")
    assert (code, body["kind"], body["groupVersion"]) == (200, "APIResourceList", "v1")

    code, body, _ = server.raw("GET", f"/api/v1/namespaces/{ns}/config%6Daps/a")  # escapes: the router's way
    assert (code, body["kind"], body["metadata"]["name"]) == (200, "ConfigMap", "a")
    code, body, _ = server.raw("GET", f"/api/v1/namespaces/{ns}/configmaps/a%2Fb")
    assert (code, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    code, body, _ = server.raw("GET", f"/apis/nosuch.example.com/v1/namespaces/{ns}/things")
    assert (code, body["kind"], body["reason"]) == (404, "Status", "NotFound")
