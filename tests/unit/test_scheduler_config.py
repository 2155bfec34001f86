"""KubeSchedulerConfiguration files: profiles, enabled/disabled plugins per extension point, plugin args."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from skiff.scheduler import config
from skiff.scheduler.config import ConfigError, resolve_plugins
from skiff.scheduler.plugins import in_tree
from skiff.scheduler.plugins.noderesources import NodeResourcesFit
from tests.unit.scheduler_objects import framework

HEAD = {"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration"}


def parse(**body: Any) -> config.SchedulerConfig:
    return config.parse({**HEAD, **body})


def names(refs: list[config.PluginRef]) -> list[str]:
    return [r.name for r in refs]


def test_defaults() -> None:
    cfg = config.load(None)
    assert [p.scheduler_name for p in cfg.profiles] == ["default-scheduler"]
    assert cfg.percentage_of_nodes_to_score == 0
    assert (cfg.pod_initial_backoff_seconds, cfg.pod_max_backoff_seconds) == (1.0, 10.0)
    refs = resolve_plugins(cfg.profiles[0], in_tree())
    assert names(refs["preFilter"]) == ["NodeAffinity", "NodePorts", "NodeResourcesFit", "VolumeBinding",
                                        "PodTopologySpread", "InterPodAffinity"]  # fmt: skip
    assert names(refs["queueSort"]) == ["PrioritySort"]


def test_bin_packing_file(tmp_path: Path) -> None:
    path = tmp_path / "sched.yaml"
    path.write_text(yaml.safe_dump({**HEAD, "profiles": [{"schedulerName": "default-scheduler", "pluginConfig": [
        {"name": "NodeResourcesFit", "args": {"scoringStrategy": {"type": "MostAllocated", "resources": [
            {"name": "cpu", "weight": 2}, {"name": "memory", "weight": 1}]}}}]}]}))  # fmt: skip
    cfg = config.load(path)
    fwk, _ = framework(cfg.profiles[0])
    fit = fwk.plugins["NodeResourcesFit"]
    assert isinstance(fit, NodeResourcesFit)
    assert fit.strategy == "MostAllocated"
    assert fit.resources == [("cpu", 2), ("memory", 1)]


def test_disable_and_reweigh_at_one_extension_point() -> None:
    cfg = parse(profiles=[{"plugins": {
        "score": {"disabled": [{"name": "NodeResourcesBalancedAllocation"}, {"name": "ImageLocality"}],
                  "enabled": [{"name": "NodeResourcesFit", "weight": 5}]},
        "filter": {"disabled": [{"name": "TaintToleration"}]},
    }}])  # fmt: skip
    fwk, _ = framework(cfg.profiles[0])
    assert [(p.name, w) for p, w in fwk.score] == [
        ("TaintToleration", 3), ("NodeAffinity", 2), ("NodeResourcesFit", 5), ("PodTopologySpread", 2),
        ("InterPodAffinity", 2),
    ]  # fmt: skip
    assert "TaintToleration" not in [p.name for p in fwk.filter]


def test_disable_everything_then_enable_some() -> None:
    cfg = parse(profiles=[{"plugins": {
        "multiPoint": {"disabled": [{"name": "*"}], "enabled": [
            {"name": "NodeResourcesFit", "weight": 1}, {"name": "DefaultBinder"}]},
    }}])  # fmt: skip
    fwk, _ = framework(cfg.profiles[0])
    assert [p.name for p in fwk.filter] == ["NodeResourcesFit"]
    assert [p.name for p, _w in fwk.score] == ["NodeResourcesFit"]
    assert [p.name for p in fwk.bind] == ["DefaultBinder"]
    assert fwk.post_filter == []


def test_several_profiles() -> None:
    cfg = parse(
        percentageOfNodesToScore=30,
        profiles=[
            {"schedulerName": "default-scheduler"},
            {"schedulerName": "packer", "percentageOfNodesToScore": 100, "pluginConfig": [
                {"name": "NodeResourcesFit", "args": {"scoringStrategy": {"type": "MostAllocated"}}}]},
        ],
    )  # fmt: skip
    assert cfg.percentage_of_nodes_to_score == 30
    packer = cfg.profile("packer")
    assert packer is not None and packer.percentage_of_nodes_to_score == 100


def test_leader_election_block() -> None:
    cfg = parse(leaderElection={"leaderElect": True, "leaseDuration": "30s", "renewDeadline": "20s",
                                "retryPeriod": "500ms", "resourceName": "my-scheduler"})  # fmt: skip
    le = cfg.leader_election
    assert (le.leader_elect, le.lease_duration, le.renew_deadline, le.retry_period, le.resource_name) == (
        True, 30.0, 20.0, 0.5, "my-scheduler")  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"apiVersion": "kubescheduler.config.k8s.io/v1beta1", "kind": "KubeSchedulerConfiguration"}, "apiVersion"),
        ({**HEAD, "kind": "Nope"}, "kind must be"),
        ({**HEAD, "profile": []}, 'unknown field "profile"'),
        ({**HEAD, "profiles": [{"schedulerName": "a"}, {"schedulerName": "a"}]}, "Duplicate"),
        ({**HEAD, "profiles": [{"plugins": {"filters": {}}}]}, 'unknown field "filters"'),
        ({**HEAD, "percentageOfNodesToScore": 120}, "not in valid range"),
        ({**HEAD, "podInitialBackoffSeconds": 5, "podMaxBackoffSeconds": 2}, "podMaxBackoffSeconds"),
        ({**HEAD, "leaderElection": {"leaseDuration": "15 parsecs"}}, "leaderElection.leaseDuration"),
        ("just text", "must be a YAML object"),
    ],
    ids=["old-version", "kind", "unknown-field", "duplicate-profile", "unknown-extension-point", "percentage",
         "backoff-order", "bad-duration", "not-an-object"],
)  # fmt: skip
def test_invalid_files(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(doc)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"plugins": {"filter": {"enabled": [{"name": "NoSuchPlugin"}]}}}, 'plugin "NoSuchPlugin"'),
        ({"plugins": {"score": {"enabled": [{"name": "NodePorts"}]}}}, "does not extend score"),
        ({"pluginConfig": [{"name": "NodeResourcesFit", "args": {"scoringStrategy": {"type": "Random"}}}]},
         "Unsupported value"),
        ({"pluginConfig": [{"name": "Typo", "args": {}}]}, "unknown plugin"),
        ({"plugins": {"multiPoint": {"disabled": [{"name": "*"}]}}}, "bind plugin"),
    ],
    ids=["unknown-plugin", "wrong-extension-point", "bad-args", "args-for-unknown-plugin", "no-binder"],
)  # fmt: skip
def test_invalid_profiles(profile: dict[str, Any], message: str) -> None:
    cfg = parse(profiles=[profile])
    with pytest.raises(ConfigError, match=message):
        framework(cfg.profiles[0])


def test_volume_plugins_are_accepted_and_ignored() -> None:
    cfg = parse(profiles=[{"plugins": {"filter": {"enabled": [{"name": "VolumeBinding"}, {"name": "VolumeZone"}]}}}])
    fwk, _ = framework(cfg.profiles[0])
    assert "VolumeZone" not in fwk.plugins
    assert "VolumeBinding" in fwk.plugins  # a real plugin
