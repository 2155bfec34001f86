"""PrioritySort: the queue's order — higher `spec.priority` first, then whoever waited longest.

The order itself is built into `skiff.scheduler.queue`; this plugin exists so
that configuration files naming it (as Kubernetes' defaults do) are understood.
"""

from __future__ import annotations

from skiff.scheduler.framework import QueueSortPlugin

NAME = "PrioritySort"


class PrioritySort(QueueSortPlugin):
    name = NAME
