"""Scheduler configuration files: `KubeSchedulerConfiguration` (kubescheduler.config.k8s.io/v1).

A Kubernetes user switches the scheduler from spreading to bin packing, or
turns plugins off, with the file they already know:

    apiVersion: kubescheduler.config.k8s.io/v1
    kind: KubeSchedulerConfiguration
    profiles:
    - schedulerName: default-scheduler
      pluginConfig:
      - name: NodeResourcesFit
        args:
          scoringStrategy:
            type: MostAllocated
            resources: [{name: cpu, weight: 1}, {name: memory, weight: 1}]

This module reads such a file into `SchedulerConfig` and works out, per
profile and extension point, which plugins run in which order with which
weight — Kubernetes' rules: the default plugins are enabled through
`multiPoint` (each at every extension point it implements); `disabled`
removes defaults (`*` all of them) at one point or everywhere; a plugin named
at a specific extension point overrides its multiPoint entry there (say, its
score weight). Plugin arguments are checked by the plugins when built.
Kubernetes' volume plugins are accepted by name and do nothing here (skiff
has no volume scheduling yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skiff.scheduler.framework import (
    BindPlugin,
    FilterPlugin,
    Plugin,
    PostBindPlugin,
    PostFilterPlugin,
    PreBindPlugin,
    PreFilterPlugin,
    PreScorePlugin,
    QueueSortPlugin,
    ReservePlugin,
    ScorePlugin,
)
from skiff.scheduler.podinfo import DEFAULT_SCHEDULER

API_VERSION = "kubescheduler.config.k8s.io/v1"
KIND = "KubeSchedulerConfiguration"

EXTENSION_POINTS: dict[str, type[Plugin]] = {
    "queueSort": QueueSortPlugin,
    "preFilter": PreFilterPlugin,
    "filter": FilterPlugin,
    "postFilter": PostFilterPlugin,
    "preScore": PreScorePlugin,
    "score": ScorePlugin,
    "reserve": ReservePlugin,
    "preBind": PreBindPlugin,
    "bind": BindPlugin,
    "postBind": PostBindPlugin,
}
OTHER_POINTS = ("preEnqueue", "permit")  # accepted in files; skiff has no plugins for them

# Kubernetes v1 defaults, in order, with score weights (pkg/scheduler/apis/config/v1/default_plugins.go)
DEFAULT_PLUGINS: tuple[tuple[str, int], ...] = (
    ("SchedulingGates", 0),
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeRestrictions", 0),
    ("NodeVolumeLimits", 0),
    ("VolumeBinding", 0),
    ("VolumeZone", 0),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
)
# known to Kubernetes users' files, no-ops in skiff (SchedulingGates is built into the queue)
NO_OP_PLUGINS = frozenset(
    {
        "SchedulingGates",
        "VolumeRestrictions",
        "NodeVolumeLimits",
        "VolumeBinding",
        "VolumeZone",
        "DynamicResources",
        "EBSLimits",
        "GCEPDLimits",
        "AzureDiskLimits",
        "CinderLimits",
    }
)

_TOP_LEVEL = {
    "apiVersion",
    "kind",
    "profiles",
    "percentageOfNodesToScore",
    "podInitialBackoffSeconds",
    "podMaxBackoffSeconds",
    "leaderElection",
    "clientConnection",
    "parallelism",
    "extenders",
    "delayCacheUntilActive",
    "enableProfiling",
    "enableContentionProfiling",
    "healthzBindAddress",
    "metricsBindAddress",
    "featureGates",
}
_PROFILE_KEYS = {"schedulerName", "percentageOfNodesToScore", "plugins", "pluginConfig"}


class ConfigError(ValueError):
    """The scheduler configuration is not valid; the message says where."""


@dataclass(frozen=True)
class PluginRef:
    name: str
    weight: int = 0  # score weight; 0 means the default (1)


@dataclass(frozen=True)
class PluginSet:
    enabled: tuple[PluginRef, ...] = ()
    disabled: frozenset[str] = frozenset()


@dataclass
class Profile:
    scheduler_name: str = DEFAULT_SCHEDULER
    percentage_of_nodes_to_score: int | None = None
    plugins: dict[str, PluginSet] = field(default_factory=dict)  # extension point (or multiPoint) -> set
    plugin_args: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class LeaderElection:
    leader_elect: bool | None = None
    resource_namespace: str = "kube-system"
    resource_name: str = "kube-scheduler"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass
class SchedulerConfig:
    profiles: list[Profile] = field(default_factory=lambda: [Profile()])
    percentage_of_nodes_to_score: int = 0  # 0: adaptive, as Kubernetes
    pod_initial_backoff_seconds: float = 1.0
    pod_max_backoff_seconds: float = 10.0
    leader_election: LeaderElection = field(default_factory=LeaderElection)

    def profile(self, scheduler_name: str) -> Profile | None:
        return next((p for p in self.profiles if p.scheduler_name == scheduler_name), None)


def default_config() -> SchedulerConfig:
    return SchedulerConfig()


def load(path: str | Path | None) -> SchedulerConfig:
    """Read a configuration file (None: the defaults)."""
    if path is None:
        return default_config()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read scheduler configuration {path}: {exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse(doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse(doc: Any) -> SchedulerConfig:
    if not isinstance(doc, Mapping):
        raise ConfigError("the configuration must be a YAML object")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if kind != KIND:
        raise ConfigError(f'kind must be "{KIND}", not {kind!r}')
    if api_version != API_VERSION:
        raise ConfigError(f'apiVersion must be "{API_VERSION}", not {api_version!r}')
    unknown = sorted(set(doc) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(f'strict decoding error: unknown field "{unknown[0]}"')
    cfg = SchedulerConfig()
    cfg.percentage_of_nodes_to_score = _percentage(doc.get("percentageOfNodesToScore"), "percentageOfNodesToScore") or 0
    cfg.pod_initial_backoff_seconds = _positive(doc.get("podInitialBackoffSeconds", 1), "podInitialBackoffSeconds")
    cfg.pod_max_backoff_seconds = _positive(doc.get("podMaxBackoffSeconds", 10), "podMaxBackoffSeconds")
    if cfg.pod_max_backoff_seconds < cfg.pod_initial_backoff_seconds:
        raise ConfigError("podMaxBackoffSeconds must be at least podInitialBackoffSeconds")
    cfg.leader_election = _leader_election(doc.get("leaderElection"))
    raw_profiles = doc.get("profiles")
    if raw_profiles is None or raw_profiles == []:
        cfg.profiles = [Profile()]
    elif not isinstance(raw_profiles, list):
        raise ConfigError("profiles must be a list")
    else:
        cfg.profiles = [_profile(p, i) for i, p in enumerate(raw_profiles)]
    names = [p.scheduler_name for p in cfg.profiles]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f'profiles[].schedulerName: Duplicate value: "{dupes[0]}"')
    return cfg


def _profile(raw: Any, i: int) -> Profile:
    where = f"profiles[{i}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object")
    unknown = sorted(set(raw) - _PROFILE_KEYS)
    if unknown:
        raise ConfigError(f'{where}: strict decoding error: unknown field "{unknown[0]}"')
    name = raw.get("schedulerName", DEFAULT_SCHEDULER)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.schedulerName: Required value")
    profile = Profile(scheduler_name=name)
    profile.percentage_of_nodes_to_score = _percentage(
        raw.get("percentageOfNodesToScore"), f"{where}.percentageOfNodesToScore"
    )
    plugins = raw.get("plugins") or {}
    if not isinstance(plugins, Mapping):
        raise ConfigError(f"{where}.plugins must be an object")
    for point, spec in plugins.items():
        if point != "multiPoint" and point not in EXTENSION_POINTS and point not in OTHER_POINTS:
            raise ConfigError(f'{where}.plugins: strict decoding error: unknown field "{point}"')
        profile.plugins[point] = _plugin_set(spec, f"{where}.plugins.{point}")
    for j, entry in enumerate(raw.get("pluginConfig") or []):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}.pluginConfig[{j}].name: Required value")
        if entry["name"] in profile.plugin_args:
            raise ConfigError(f'{where}.pluginConfig[{j}]: Duplicate value: "{entry["name"]}"')
        args = entry.get("args") or {}
        if not isinstance(args, Mapping):
            raise ConfigError(f"{where}.pluginConfig[{j}].args must be an object")
        profile.plugin_args[entry["name"]] = dict(args)
    return profile


def _plugin_set(spec: Any, where: str) -> PluginSet:
    if spec is None:
        return PluginSet()
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be an object with enabled/disabled")
    enabled = []
    for j, p in enumerate(spec.get("enabled") or []):
        if not isinstance(p, Mapping) or not isinstance(p.get("name"), str) or not p["name"]:
            raise ConfigError(f"{where}.enabled[{j}].name: Required value")
        weight = p.get("weight", 0) or 0
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise ConfigError(f"{where}.enabled[{j}].weight: Invalid value: {weight!r}: must be a non-negative integer")
        enabled.append(PluginRef(p["name"], weight))
    disabled = set()
    for j, p in enumerate(spec.get("disabled") or []):
        if not isinstance(p, Mapping) or not isinstance(p.get("name"), str) or not p["name"]:
            raise ConfigError(f"{where}.disabled[{j}].name: Required value")
        disabled.add(p["name"])
    return PluginSet(tuple(enabled), frozenset(disabled))


def _leader_election(raw: Any) -> LeaderElection:
    le = LeaderElection()
    if raw is None:
        return le
    if not isinstance(raw, Mapping):
        raise ConfigError("leaderElection must be an object")
    if "leaderElect" in raw:
        le.leader_elect = bool(raw["leaderElect"])
    le.resource_namespace = str(raw.get("resourceNamespace") or le.resource_namespace)
    le.resource_name = str(raw.get("resourceName") or le.resource_name)
    for key, attr in (("leaseDuration", "lease_duration"), ("renewDeadline", "renew_deadline"),
                      ("retryPeriod", "retry_period")):  # fmt: skip
        if key in raw:
            setattr(le, attr, _duration(raw[key], f"leaderElection.{key}"))
    return le


def _duration(value: Any, where: str) -> float:
    """A Go duration as Kubernetes configs write them ("15s", "1m30s", "500ms") or plain seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: Invalid value: {value!r}")
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    i = 0
    while i < len(value):
        ch = value[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = next((u for u in ("ms", "us", "µs", "ns", "h", "m", "s") if value.startswith(u, i)), None)
        if unit is None or not number:
            raise ConfigError(f"{where}: Invalid value: {value!r}: not a duration")
        total += float(number) * units[unit]
        number, i = "", i + len(unit)
    if number:
        raise ConfigError(f"{where}: Invalid value: {value!r}: missing unit in duration")
    return total


def _percentage(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
        raise ConfigError(f"{where}: Invalid value: {value!r}: not in valid range [0-100]")
    return value


def _positive(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where}: Invalid value: {value!r}: must be greater than 0")
    return float(value)


def resolve_plugins(profile: Profile, registry: Mapping[str, type[Plugin]]) -> dict[str, list[PluginRef]]:
    """Per extension point, the plugins that run there, in order, with their weights."""
    for point, spec in profile.plugins.items():
        for ref in spec.enabled:
            if ref.name not in registry and ref.name not in NO_OP_PLUGINS:
                raise ConfigError(f'{profile.scheduler_name}: plugin "{ref.name}" ({point}) is not registered')
    multi = _merge([PluginRef(n, w) for n, w in DEFAULT_PLUGINS], profile.plugins.get("multiPoint", PluginSet()))
    out: dict[str, list[PluginRef]] = {}
    for point, base in EXTENSION_POINTS.items():
        spec = profile.plugins.get(point, PluginSet())
        explicit = {r.name: r for r in spec.enabled}
        chosen: list[PluginRef] = []
        if "*" not in spec.disabled:
            for ref in multi:
                cls = registry.get(ref.name)
                if cls is None or not issubclass(cls, base) or ref.name in spec.disabled:
                    continue
                chosen.append(explicit.pop(ref.name, ref))
        for ref in spec.enabled:
            if ref.name in explicit:
                cls = registry.get(ref.name)
                if cls is None:
                    continue  # a no-op plugin
                if not issubclass(cls, base):
                    raise ConfigError(f'{profile.scheduler_name}: plugin "{ref.name}" does not extend {point}')
                chosen.append(ref)
        if point == "score":
            for ref in chosen:
                if ref.weight > 100:
                    raise ConfigError(f'{profile.scheduler_name}: score plugin "{ref.name}" weight must be 1-100')
        out[point] = chosen
    if len(out["bind"]) == 0:
        raise ConfigError(f"{profile.scheduler_name}: at least one bind plugin is needed")
    if len(out["queueSort"]) > 1:
        raise ConfigError(f"{profile.scheduler_name}: only one queueSort plugin can be enabled")
    return out


def _merge(defaults: list[PluginRef], custom: PluginSet) -> list[PluginRef]:
    """Kubernetes `mergePluginSet`: defaults minus disabled (custom weights kept in place), then custom extras."""
    custom_by_name = {r.name: r for r in custom.enabled}
    out = []
    if "*" not in custom.disabled:
        for ref in defaults:
            if ref.name in custom.disabled:
                continue
            out.append(custom_by_name.pop(ref.name, ref))
    out.extend(r for r in custom.enabled if r.name in custom_by_name)
    return out
