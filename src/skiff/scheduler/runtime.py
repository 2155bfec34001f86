"""One scheduling profile at run time: its plugins, built once, and how each extension point runs them.

Kubernetes' `frameworkruntime.frameworkImpl`. A plugin enabled at several
extension points is one object (its PreFilter and Filter share state through
the CycleState). PreFilter and PreScore plugins may answer SKIP, and the
matching Filter / Score plugin is then left out for that pod — this is what
keeps affinity, ports and topology spread off the path of pods that use none
of them. Scores are weighted and summed per node after each plugin's
normalization.

The framework is also the `Handle` its plugins get: the scheduler's services
(cache, API calls) plus this profile's own filters for what-if evaluations
(preemption).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Coroutine, Mapping
from typing import Any

from skiff.scheduler.cache import SchedulerCache
from skiff.scheduler.config import ConfigError, Profile, resolve_plugins
from skiff.scheduler.framework import (
    SKIP,
    BindPlugin,
    ClusterEvent,
    Code,
    CycleState,
    FilterPlugin,
    Plugin,
    PostBindPlugin,
    PostFilterPlugin,
    PostFilterResult,
    PreBindPlugin,
    PreFilterExtensions,
    PreFilterPlugin,
    PreScorePlugin,
    ReservePlugin,
    ScorePlugin,
    Services,
    Status,
    VolumeLister,
    error,
)
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.podinfo import PodInfo


class Framework:
    """The plugins of one profile, ready to run."""

    def __init__(self, profile: Profile, registry: Mapping[str, type[Plugin]], services: Services) -> None:
        self.profile = profile
        self.scheduler_name = profile.scheduler_name
        self.percentage_of_nodes_to_score = profile.percentage_of_nodes_to_score
        self.services = services
        refs = resolve_plugins(profile, registry)
        unknown_args = sorted(set(profile.plugin_args) - set(registry))
        if unknown_args:
            raise ConfigError(f'{profile.scheduler_name}: pluginConfig for unknown plugin "{unknown_args[0]}"')
        self.plugins: dict[str, Plugin] = {}
        for point_refs in refs.values():
            for ref in point_refs:
                if ref.name not in self.plugins:
                    try:
                        self.plugins[ref.name] = registry[ref.name].new(profile.plugin_args.get(ref.name, {}), self)
                    except (ValueError, TypeError) as exc:
                        raise ConfigError(f'{profile.scheduler_name}: plugin "{ref.name}": {exc}') from exc

        def at(point: str) -> list[Plugin]:
            return [self.plugins[ref.name] for ref in refs[point]]

        self.pre_filter = [p for p in at("preFilter") if isinstance(p, PreFilterPlugin)]
        self.filter = [p for p in at("filter") if isinstance(p, FilterPlugin)]
        self.post_filter = [p for p in at("postFilter") if isinstance(p, PostFilterPlugin)]
        self.pre_score = [p for p in at("preScore") if isinstance(p, PreScorePlugin)]
        self.score: list[tuple[ScorePlugin, int]] = [
            (p, ref.weight or 1)
            for p, ref in zip(at("score"), refs["score"], strict=True)
            if isinstance(p, ScorePlugin)
        ]
        self.reserve = [p for p in at("reserve") if isinstance(p, ReservePlugin)]
        self.pre_bind = [p for p in at("preBind") if isinstance(p, PreBindPlugin)]
        self.bind = [p for p in at("bind") if isinstance(p, BindPlugin)]
        self.post_bind = [p for p in at("postBind") if isinstance(p, PostBindPlugin)]
        self.extensions = [p for p in self.pre_filter if isinstance(p, PreFilterExtensions)]

    def plugin_events(self) -> dict[str, tuple[ClusterEvent, ...]]:
        """Per plugin that can reject pods, the events that may make them fit."""
        return {name: tuple(p.events_to_register()) for name, p in self.plugins.items()}

    # --- Handle -------------------------------------------------------------------------------
    @property
    def cache(self) -> SchedulerCache:
        return self.services.cache

    def namespace_labels(self) -> Mapping[str, Mapping[str, str]]:
        return self.services.namespace_labels()

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        self.services.spawn(coro, name=name)

    async def bind_pod(self, pod: PodInfo, node_name: str) -> None:
        await self.services.bind_pod(pod, node_name)

    async def delete_pod(self, pod: PodInfo, *, reason: str) -> None:
        await self.services.delete_pod(pod, reason=reason)

    async def set_nominated_node(self, pod: PodInfo, node_name: str | None) -> None:
        await self.services.set_nominated_node(pod, node_name)

    def volume_lister(self) -> VolumeLister:
        return self.services.volume_lister()

    async def annotate_claim(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        await self.services.annotate_claim(namespace, name, annotations)

    def run_add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        for ext in self.extensions:
            if isinstance(ext, Plugin) and ext.name not in state.skip_filter:
                ext.add_pod(state, pod, added, node)

    def run_remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None:
        for ext in self.extensions:
            if isinstance(ext, Plugin) and ext.name not in state.skip_filter:
                ext.remove_pod(state, pod, removed, node)

    # --- extension points ---------------------------------------------------------------------
    def run_pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        """None if every PreFilter passed (or skipped); else the first rejection or error."""
        for plugin in self.pre_filter:
            status = plugin.pre_filter(state, pod)
            if status is None:
                continue
            if status.code == Code.SKIP:
                state.skip_filter.add(plugin.name)
                continue
            return status.with_plugin(plugin.name)
        return None

    def active_filters(self, state: CycleState) -> list[FilterPlugin]:
        skip = state.skip_filter
        return [p for p in self.filter if p.name not in skip] if skip else self.filter

    def run_filters(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        """All filters on one node, stopping at the first that rejects it."""
        for plugin in self.active_filters(state):
            status = plugin.filter(state, pod, node)
            if status is not None:
                return status.with_plugin(plugin.name)
        return None

    def run_post_filter(
        self, state: CycleState, pod: PodInfo, failed: Mapping[str, Status]
    ) -> tuple[PostFilterResult | None, Status | None]:
        """The first PostFilter that makes the pod schedulable wins; else the last plugin's answer."""
        result: PostFilterResult | None = None
        last: Status | None = Status(Code.UNSCHEDULABLE)
        for plugin in self.post_filter:
            result, status = plugin.post_filter(state, pod, failed)
            if status is None:
                return result, None
            last = status.with_plugin(plugin.name)
            if status.code == Code.ERROR:
                return result, last
        return result, last

    def run_pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        for plugin in self.pre_score:
            status = plugin.pre_score(state, pod, nodes)
            if status is None:
                continue
            if status.code == Code.SKIP:
                state.skip_score.add(plugin.name)
                continue
            return status.with_plugin(plugin.name)
        return None

    def run_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        """The weighted sum of every Score plugin's (normalized) score, per node."""
        totals: list[int] | None = None
        skip = state.skip_score
        for plugin, weight in self.score:
            if plugin.name in skip:
                continue
            scores = plugin.score_nodes(state, pod, nodes)
            if plugin.normalizes:
                plugin.normalize_scores(state, pod, nodes, scores)
            if weight != 1:
                scores = list(map(operator.mul, scores, itertools.repeat(weight)))
            totals = scores if totals is None else list(map(operator.add, totals, scores))
        return [0] * len(nodes) if totals is None else totals

    def run_reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for plugin in self.reserve:
            status = plugin.reserve(state, pod, node_name)
            if status is not None and status.code != Code.SKIP:
                return status.with_plugin(plugin.name)
        return None

    def run_unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for plugin in reversed(self.reserve):
            plugin.unreserve(state, pod, node_name)

    async def run_pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for plugin in self.pre_bind:
            status = await plugin.pre_bind(state, pod, node_name)
            if status is not None and status.code != Code.SKIP:
                return status.with_plugin(plugin.name)
        return None

    async def run_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        """The first bind plugin that does not SKIP binds; an exception from it propagates."""
        for plugin in self.bind:
            status = await plugin.bind(state, pod, node_name)
            if status is SKIP or (status is not None and status.code == Code.SKIP):
                continue
            return None if status is None else status.with_plugin(plugin.name)
        return error("no bind plugin bound the pod")

    def run_post_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for plugin in self.post_bind:
            plugin.post_bind(state, pod, node_name)
