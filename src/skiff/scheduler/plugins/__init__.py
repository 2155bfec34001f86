"""The in-tree plugins, one module each, and the registry that names them.

Configuration files refer to plugins by these names (Kubernetes' names). An
out-of-tree plugin is a `Plugin` subclass added to a copy of `in_tree()`
passed to `run_scheduler(registry=...)`.
"""

from __future__ import annotations

from skiff.scheduler.framework import Plugin
from skiff.scheduler.plugins.balancedallocation import BalancedAllocation
from skiff.scheduler.plugins.defaultbinder import DefaultBinder
from skiff.scheduler.plugins.defaultpreemption import DefaultPreemption
from skiff.scheduler.plugins.imagelocality import ImageLocality
from skiff.scheduler.plugins.interpodaffinity import InterPodAffinity
from skiff.scheduler.plugins.nodeaffinity import NodeAffinity
from skiff.scheduler.plugins.nodename import NodeName
from skiff.scheduler.plugins.nodeports import NodePorts
from skiff.scheduler.plugins.noderesources import NodeResourcesFit
from skiff.scheduler.plugins.nodeunschedulable import NodeUnschedulable
from skiff.scheduler.plugins.podtopologyspread import PodTopologySpread
from skiff.scheduler.plugins.queuesort import PrioritySort
from skiff.scheduler.plugins.tainttoleration import TaintToleration
from skiff.scheduler.plugins.volumebinding import VolumeBinding

_PLUGINS: tuple[type[Plugin], ...] = (
    PrioritySort,
    NodeUnschedulable,
    NodeName,
    TaintToleration,
    NodeAffinity,
    NodePorts,
    NodeResourcesFit,
    VolumeBinding,
    PodTopologySpread,
    InterPodAffinity,
    DefaultPreemption,
    BalancedAllocation,
    ImageLocality,
    DefaultBinder,
)


def in_tree() -> dict[str, type[Plugin]]:
    """A fresh registry of the built-in plugins: name -> class (whose `new(args, handle)` builds one)."""
    return {cls.name: cls for cls in _PLUGINS}


__all__ = [
    "BalancedAllocation",
    "DefaultBinder",
    "DefaultPreemption",
    "ImageLocality",
    "InterPodAffinity",
    "NodeAffinity",
    "NodeName",
    "NodePorts",
    "NodeResourcesFit",
    "NodeUnschedulable",
    "PodTopologySpread",
    "PrioritySort",
    "TaintToleration",
    "VolumeBinding",
    "in_tree",
]
