"""The namespace controller's status conditions and the discovery parsing it relies on, without a server."""

from __future__ import annotations

from collections import Counter

import pytest

from skiff.client.resources import PODS
from skiff.controllers.discovery import parse_resource_list
from skiff.controllers.namespace import CONDITION_TYPES, Outcome, Remaining, updated_conditions

pytestmark = pytest.mark.timeout(10)


def test_remaining_content_and_finalizers_are_reported_like_kubernetes() -> None:
    outcome = Outcome(
        remaining={
            "configmaps.": Remaining(count=2, finalizers=Counter({"example.com/hold": 2})),
            "deployments.apps": Remaining(count=1, finalizers=Counter({"example.com/hold": 1, "other/x": 1})),
        }
    )
    conds = outcome.conditions()
    assert conds["NamespaceContentRemaining"] == (
        "SomeResourcesRemain",
        "Some resources are remaining: configmaps. has 2 resource instances, deployments.apps has 1 resource instances",
    )
    assert conds["NamespaceFinalizersRemaining"] == (
        "SomeFinalizerRemain",
        "Some finalizers are remaining: example.com/hold in 3 resource instances, other/x in 1 resource instances",
    )
    assert "NamespaceDeletionContentFailure" not in conds


def test_errors_become_a_content_failure() -> None:
    conds = Outcome(errors=["pods.: boom", "configmaps.: bang"]).conditions()
    assert conds["NamespaceDeletionContentFailure"] == (
        "ContentDeletionFailed",
        "Failed to delete all resource types, 2 remaining: configmaps.: bang, pods.: boom",
    )


def test_conditions_are_all_written_then_only_changed() -> None:
    first = updated_conditions([], {"NamespaceContentRemaining": ("SomeResourcesRemain", "m")})
    assert first is not None
    assert [c["type"] for c in first] == list(CONDITION_TYPES)
    by_type = {c["type"]: c for c in first}
    assert by_type["NamespaceContentRemaining"]["status"] == "True"
    assert by_type["NamespaceDeletionDiscoveryFailure"] == {
        "type": "NamespaceDeletionDiscoveryFailure",
        "status": "False",
        "lastTransitionTime": by_type["NamespaceDeletionDiscoveryFailure"]["lastTransitionTime"],
        "reason": "ResourcesDiscovered",
        "message": "All resources successfully discovered",
    }
    assert updated_conditions(first, {"NamespaceContentRemaining": ("SomeResourcesRemain", "m")}) is None
    cleared = updated_conditions(first, {})
    assert cleared is not None
    content = {c["type"]: c for c in cleared}["NamespaceContentRemaining"]
    assert (content["status"], content["reason"], content["message"]) == (
        "False",
        "ContentRemoved",
        "All content successfully removed",
    )


def test_parse_resource_list_keeps_top_level_resources() -> None:
    doc = {
        "groupVersion": "v1",
        "resources": [
            {"name": "pods", "kind": "Pod", "namespaced": True, "verbs": ["delete", "list"]},
            {"name": "pods/status", "kind": "Pod", "namespaced": True, "verbs": ["get"]},
        ],
    }
    [pods] = parse_resource_list(doc)
    assert pods.resource == PODS
    assert pods.supports("delete", "list") and not pods.supports("watch")
    assert pods.group_resource == "pods."
    [rs] = parse_resource_list(
        {"groupVersion": "apps/v1", "resources": [{"name": "replicasets", "kind": "ReplicaSet", "namespaced": True}]}
    )
    assert (rs.resource.group, rs.resource.version, rs.group_resource) == ("apps", "v1", "replicasets.apps")
