"""The scheduling framework's vocabulary: statuses, cycle state, extension points, events.

The same shape as Kubernetes' `pkg/scheduler/framework`, so a reader who
knows one knows the other: a pod goes through PreFilter → Filter → (PostFilter
when nothing fits) → PreScore → Score (+NormalizeScore) → Reserve → PreBind →
Bind → PostBind, and each step is a list of small plugins. A plugin answers
with a `Status` whose code says what went wrong: `UNSCHEDULABLE` (another pod
leaving could fix it, so preemption may help), `UNSCHEDULABLE_AND_UNRESOLVABLE`
(nothing short of changing the node or the pod will), `ERROR`, or `SKIP` from
PreFilter/PreScore to say "nothing for me to do for this pod".

Two Python adaptations, both for speed (the scheduler looks at hundreds of
nodes per pod and a Python call costs what a Go comparison does not):

- success is `None`, as a nil `*Status` is in Go, so the common answer allocates nothing;
- Filter and Score have a batch form (`filter_nodes`, `score_nodes`) that the
  framework calls once per pod with a list of nodes. The defaults loop over the
  one-node methods; the hot plugins override them with tight loops. Both forms
  must agree, and the unit tests check that they do.

Plugins declare which cluster events can make a pod they rejected schedulable
(`events_to_register`), which is how the queue knows whom to retry when a node
is added or a pod goes away.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from skiff.scheduler.nodeinfo import NodeInfo, Span
from skiff.scheduler.podinfo import PodInfo

if TYPE_CHECKING:
    from skiff.scheduler.cache import SchedulerCache

MAX_NODE_SCORE = 100
MIN_NODE_SCORE = 0


class Code(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    WAIT = 4
    SKIP = 5


@dataclass(frozen=True, slots=True)
class Status:
    """Why a plugin said no (or skip). Success is `None`, never a Status."""

    code: Code
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    @property
    def rejected(self) -> bool:
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE)

    def with_plugin(self, plugin: str) -> Status:
        return self if self.plugin == plugin else Status(self.code, self.reasons, plugin)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}" if self.reasons else self.code.name


def unschedulable(*reasons: str, plugin: str = "") -> Status:
    return Status(Code.UNSCHEDULABLE, reasons, plugin)


def unresolvable(*reasons: str, plugin: str = "") -> Status:
    return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons, plugin)


def error(message: str, plugin: str = "") -> Status:
    return Status(Code.ERROR, (message,), plugin)


SKIP = Status(Code.SKIP)


class CycleState:
    """What plugins compute for one pod in one scheduling cycle (PreFilter results, say), by key."""

    __slots__ = ("data", "node_names", "restricted_by", "skip_filter", "skip_score", "span")

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.skip_filter: set[str] = set()  # plugins whose PreFilter answered SKIP
        self.skip_score: set[str] = set()  # plugins whose PreScore answered SKIP
        self.node_names: set[str] | None = None  # PreFilter narrowed the candidates to these (None: all)
        self.restricted_by: list[str] = []  # ...on the word of these plugins
        # set by the algorithm while the nodes handed to filter_nodes / score_nodes are `count` positions of
        # the node list from `start` (wrapping): plugins may then read answers from the columns by slice
        self.span: Span | None = None

    def clone(self) -> CycleState:
        """A copy for what-if evaluations; plugin states with a `clone()` method are copied through it."""
        other = CycleState()
        other.data = {k: (v.clone() if hasattr(v, "clone") else v) for k, v in self.data.items()}
        other.skip_filter = set(self.skip_filter)
        other.skip_score = set(self.skip_score)
        other.node_names = None if self.node_names is None else set(self.node_names)
        other.restricted_by = list(self.restricted_by)
        return other

    def restrict_nodes(self, names: Iterable[str], plugin: str) -> None:
        """Only these nodes can fit (Kubernetes' PreFilterResult; intersected with what others said)."""
        wanted = set(names)
        self.node_names = wanted if self.node_names is None else self.node_names & wanted
        if plugin not in self.restricted_by:
            self.restricted_by.append(plugin)


# --- cluster events --------------------------------------------------------------------------------


class ActionType(enum.IntFlag):
    ADD = enum.auto()
    DELETE = enum.auto()
    UPDATE_NODE_ALLOCATABLE = enum.auto()
    UPDATE_NODE_LABEL = enum.auto()
    UPDATE_NODE_TAINT = enum.auto()
    UPDATE_NODE_CONDITION = enum.auto()
    UPDATE_NODE_ANNOTATION = enum.auto()
    UPDATE_POD_LABEL = enum.auto()
    UPDATE_POD_SCALE_DOWN = enum.auto()  # an assigned pod asks for less
    UPDATE_POD_OTHER = enum.auto()
    UPDATE = (
        UPDATE_NODE_ALLOCATABLE
        | UPDATE_NODE_LABEL
        | UPDATE_NODE_TAINT
        | UPDATE_NODE_CONDITION
        | UPDATE_NODE_ANNOTATION
        | UPDATE_POD_LABEL
        | UPDATE_POD_SCALE_DOWN
        | UPDATE_POD_OTHER
    )
    ALL = ADD | DELETE | UPDATE


NODE, ASSIGNED_POD, NAMESPACE, WILDCARD = "Node", "AssignedPod", "Namespace", "*"
PVC, PV, STORAGE_CLASS = "PersistentVolumeClaim", "PersistentVolume", "StorageClass"


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """Something changed in the cluster: `resource` is Node, AssignedPod, Namespace (or * for anything)."""

    resource: str
    action: ActionType
    label: str = ""

    def matches(self, registered: ClusterEvent) -> bool:
        """Does this (happened) event fall under what a plugin `registered` for?"""
        if registered.resource not in (WILDCARD, self.resource):
            return False
        return bool(self.action & registered.action)


EVERYTHING = ClusterEvent(WILDCARD, ActionType.ALL, "everything")


# --- plugins ---------------------------------------------------------------------------------------


class Plugin(abc.ABC):
    """Base of every plugin; `name` is what scheduler configurations call it."""

    name: ClassVar[str]

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> Plugin:
        """Build the plugin from its `pluginConfig` args (ValueError if they are wrong)."""
        if args:
            raise ValueError(f"{cls.name} takes no arguments")
        return cls()

    def events_to_register(self) -> Iterable[ClusterEvent]:
        """Events after which a pod this plugin rejected may fit now (default: any change)."""
        return (EVERYTHING,)


class PreFilterPlugin(Plugin):
    @abc.abstractmethod
    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        """Prepare for Filter (write to `state`), reject the pod outright, or answer SKIP."""


class FilterPlugin(Plugin):
    @abc.abstractmethod
    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        """None if the pod could run on the node, else the reason it cannot."""

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        """The nodes that pass, in order; for each that fails, `failed[name]` = its Status."""
        out = []
        for node in nodes:
            status = self.filter(state, pod, node)
            if status is None:
                out.append(node)
            else:
                failed[node.name] = status.with_plugin(self.name)
        return out


class PreFilterExtensions(abc.ABC):
    """For plugins whose PreFilter state depends on other pods: keep it right when preemption
    removes (or a nominated pod adds) a pod on a node in a what-if evaluation."""

    @abc.abstractmethod
    def add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None: ...

    @abc.abstractmethod
    def remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None: ...


@dataclass
class PostFilterResult:
    nominated_node: str | None = None


class PostFilterPlugin(Plugin):
    @abc.abstractmethod
    def post_filter(
        self, state: CycleState, pod: PodInfo, failed: Mapping[str, Status]
    ) -> tuple[PostFilterResult | None, Status | None]:
        """Try to make the pod schedulable (preemption). Runs synchronously; API calls go to tasks."""


class PreScorePlugin(Plugin):
    @abc.abstractmethod
    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        """Prepare for Score over the feasible `nodes`, or answer SKIP."""


class ScorePlugin(Plugin):
    normalizes: ClassVar[bool] = False  # True if normalize_scores must run

    @abc.abstractmethod
    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        """How much the plugin likes the node for the pod (0..100 unless normalized after)."""

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        return [self.score(state, pod, node) for node in nodes]

    def normalize_scores(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]) -> None:
        """Rescale `scores` (in place) to 0..100."""


class ReservePlugin(Plugin):
    @abc.abstractmethod
    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None: ...

    @abc.abstractmethod
    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None: ...


class PreBindPlugin(Plugin):
    @abc.abstractmethod
    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None: ...


class BindPlugin(Plugin):
    @abc.abstractmethod
    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        """Bind, or answer SKIP to leave it to the next bind plugin."""


class PostBindPlugin(Plugin):
    @abc.abstractmethod
    def post_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> None: ...


class QueueSortPlugin(Plugin):
    """Marks the queue's order; skiff's queue implements PrioritySort (priority, then age) itself."""


def default_normalize(scores: list[int], *, reverse: bool = False) -> None:
    """Kubernetes `helper.DefaultNormalizeScore`: scale so the highest is 100 (or, reversed, the lowest)."""
    highest = max(scores, default=0)
    if highest == 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    for i, s in enumerate(scores):
        s = MAX_NODE_SCORE * s // highest
        scores[i] = MAX_NODE_SCORE - s if reverse else s


# --- what plugins get ----------------------------------------------------------------------------


class VolumeLister(Protocol):
    """Claims, volumes and storage classes as the scheduler's informers have them (VolumeBinding reads them)."""

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def volume(self, name: str) -> dict[str, Any] | None: ...

    def volumes(self) -> list[dict[str, Any]]: ...

    def storage_class(self, name: str) -> dict[str, Any] | None: ...


class Services(Protocol):
    """What the scheduler offers every profile: the cache and the API calls plugins may make."""

    @property
    def cache(self) -> SchedulerCache: ...

    def namespace_labels(self) -> Mapping[str, Mapping[str, str]]: ...

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run an API call in the background (its failure is logged, never lost)."""

    async def bind_pod(self, pod: PodInfo, node_name: str) -> None: ...

    async def delete_pod(self, pod: PodInfo, *, reason: str) -> None: ...

    async def set_nominated_node(self, pod: PodInfo, node_name: str | None) -> None: ...

    def volume_lister(self) -> VolumeLister: ...

    async def annotate_claim(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None: ...


class Handle(Services, Protocol):
    """What a plugin may use besides its own arguments (Kubernetes' `framework.Handle`): the
    scheduler's services plus its own profile's plugins, for what-if evaluations (preemption)."""

    def run_filters(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None: ...

    def run_add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None: ...

    def run_remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None: ...


Registry = dict[str, type[Plugin]]  # name -> plugin class; `cls.new(args, handle)` is the factory


# --- why a pod fits nowhere ------------------------------------------------------------------------


@dataclass
class Diagnosis:
    node_statuses: dict[str, Status] = field(default_factory=dict)
    absent_status: Status | None = None  # for nodes a PreFilter result left out
    unschedulable_plugins: set[str] = field(default_factory=set)
    pre_filter_msg: str = ""
    post_filter_msg: str = ""


class FitError(Exception):
    """No node fits the pod; `str()` is Kubernetes' "0/3 nodes are available: ..." message."""

    def __init__(self, pod: PodInfo, num_all_nodes: int, diagnosis: Diagnosis) -> None:
        super().__init__()
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.diagnosis = diagnosis

    def __str__(self) -> str:
        d = self.diagnosis
        msg = f"0/{self.num_all_nodes} nodes are available:"
        if d.pre_filter_msg:
            msg += f" {d.pre_filter_msg}."
        else:
            counts: dict[str, int] = {}
            for status in d.node_statuses.values():
                for reason in status.reasons:
                    counts[reason] = counts.get(reason, 0) + 1
            missing = self.num_all_nodes - len(d.node_statuses)
            if missing > 0 and d.absent_status is not None:
                for reason in d.absent_status.reasons:
                    counts[reason] = counts.get(reason, 0) + missing
            # sorted as strings ("10 x" before "2 y"), exactly as Kubernetes' sort.Strings does
            histogram = sorted(f"{n} {reason}" for reason, n in counts.items())
            if histogram:
                msg += f" {', '.join(histogram)}."
        if d.post_filter_msg:
            msg += f" {d.post_filter_msg}"
        return msg


NO_NODES_AVAILABLE = "no nodes available to schedule pods"
