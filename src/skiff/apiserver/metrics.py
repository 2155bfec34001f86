"""The resource metrics API, `metrics.k8s.io/v1beta1`, served from what nodes report.

In Kubernetes, metrics-server scrapes every kubelet and serves NodeMetrics and
PodMetrics through API aggregation; `kubectl top` and the HPA read them. skiff
has no aggregation layer and no scraper: node agents push their usage to the
apiserver, which keeps the latest report of each node IN MEMORY (metrics are
ephemeral — never written to storage, gone on restart, as with metrics-server)
and serves the same two read-only kinds in the same shape.

Read path (what metrics-server serves; get and list, label and field selectors,
Table output; no watch):

    GET /apis/metrics.k8s.io/v1beta1/nodes[/<node>]
    GET /apis/metrics.k8s.io/v1beta1[/namespaces/<ns>]/pods[/<pod>]

Objects are joined with the Node and Pod objects in storage at read time, as
metrics-server joins with its informers: metrics carry the current labels,
selectors are the pods'/nodes' own (`labelSelector`, `fieldSelector`), and a
pod or node that no longer exists has no metrics.

Write path (a skiff extension; authorized like any write: verb `create` on
resource `nodes`, subresource `report`, group `metrics.k8s.io`):

    POST /apis/metrics.k8s.io/v1beta1/nodes/<node>/report
    {
      "timestamp": "2025-01-01T10:00:00Z",      # when sampled; default: on receipt
      "window": "10s",                          # the sampling window, a Go duration; default 10s
      "usage": {"cpu": "1200m", "memory": "2Gi"},              # the node's own usage
      "pods": [{"namespace": "ns", "name": "web-1", "uid": "…",  # uid optional: guards pod re-creation
                "containers": [{"name": "app", "usage": {"cpu": "400m", "memory": "200Mi"}}]}]
    }

CPU is in cores (`"250m"`, `"12345n"`), memory in bytes (`"64Mi"`,
`"123456Ki"`), both Kubernetes quantities, validated on receipt (400 on a bad
one). A report replaces the node's previous one, pods included (a pod left
out has no metrics any more). It answers a `Success` Status. Entries expire
3 windows after receipt, so a node that stops reporting
stops having metrics. Reports go to the apiserver a node talks to: with
several apiservers each serves what it received (a gap until reports are
shared).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from skiff.api import errors, quantity
from skiff.api.durations import format_duration
from skiff.api.tables import include_object_param
from skiff.apiserver import content
from skiff.apiserver.metrics_store import MetricsStore, NodeSample, PodSample
from skiff.apiserver.objects import now_rfc3339, partial_metadata
from skiff.apiserver.options import ListOptions, not_found
from skiff.apiserver.registry import Registry, ResourceType
from skiff.apiserver.store import Store
from skiff.apiserver.strategy import Strategy

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
PREFIX = f"/apis/{GROUP}/{VERSION}"
READ_VERBS = ("get", "list")

Obj = dict[str, Any]

NODE_METRICS = ResourceType(
    group=GROUP,
    version=VERSION,
    kind="NodeMetrics",
    plural="nodes",
    singular="nodemetrics",
    namespaced=False,
    verbs=READ_VERBS,
    schema_ref="io.k8s.metrics.pkg.apis.metrics.v1beta1.NodeMetrics",
    strategy=Strategy(tracks_generation=False),
    extra={"served_by": "metrics"},  # in memory: never routed to the generic store
)
POD_METRICS = ResourceType(
    group=GROUP,
    version=VERSION,
    kind="PodMetrics",
    plural="pods",
    singular="podmetrics",
    namespaced=True,
    verbs=READ_VERBS,
    schema_ref="io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics",
    strategy=Strategy(tracks_generation=False),
    extra={"served_by": "metrics"},
)


# ---------------------------------------------------------------- objects as served


def node_metrics(node: Obj, sample: NodeSample) -> Obj:
    return {
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": _metadata(node),
        "timestamp": sample.timestamp,
        "window": format_duration(sample.window),
        "usage": dict(sample.usage),
    }


def pod_metrics(pod: Obj, sample: PodSample) -> Obj:
    return {
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": _metadata(pod),
        "timestamp": sample.timestamp,
        "window": format_duration(sample.window),
        "containers": [{"name": name, "usage": dict(usage)} for name, usage in sample.containers],
    }


def _metadata(source: Obj) -> Obj:
    """As metrics-server: the object's name, namespace and labels; created now (metrics are fresh each read)."""
    meta = source.get("metadata") or {}
    out: Obj = {"name": meta.get("name", "")}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    out["creationTimestamp"] = now_rfc3339()
    if meta.get("labels"):
        out["labels"] = dict(meta["labels"])
    return out


def metrics_table(rt: ResourceType, items: list[Obj], include_object: str) -> Obj:
    """metrics-server's Table: Name, one column per resource (summed over containers), Window."""
    totals = [_total_usage(rt, item) for item in items]
    names = sorted({r for t in totals for r in t}) or ["cpu", "memory"]
    columns: list[Obj] = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name of the resource", "priority": 0}
    ]
    columns += [{"name": n, "type": "string", "format": "quantity", "description": "", "priority": 0} for n in names]
    columns.append({"name": "Window", "type": "string", "format": "duration", "description": "", "priority": 0})
    rows = []
    for item, total in zip(items, totals, strict=True):
        row: Obj = {"cells": [item["metadata"]["name"], *(total.get(n, "0") for n in names), item["window"]]}
        if include_object == "Metadata":
            row["object"] = partial_metadata(item)
        elif include_object == "Object":
            row["object"] = item
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": columns, "rows": rows}


def _total_usage(rt: ResourceType, item: Obj) -> dict[str, str]:
    if rt.kind == "NodeMetrics":
        return dict(item.get("usage") or {})
    sums: dict[str, int] = {}
    for c in item.get("containers") or []:
        for resource, amount in (c.get("usage") or {}).items():
            sums[resource] = sums.get(resource, 0) + quantity.milli_value(amount)
    return {r: (quantity.format_milli(m) if r == "cpu" else _format_units(m)) for r, m in sums.items()}


def _format_units(milli: int) -> str:
    """Memory and other byte-like sums, as metrics-server prints them (`188992Ki`)."""
    return quantity.format_bytes(milli // 1000) if milli % 1000 == 0 else quantity.format_milli(milli)


# ---------------------------------------------------------------- HTTP


class MetricsAPI:
    """The request handlers: reads joined with storage, reports into the `MetricsStore`."""

    def __init__(self, store: Store, registry: Registry, metrics: MetricsStore | None = None) -> None:
        self.store = store
        self.registry = registry
        self.metrics = metrics or MetricsStore()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path[len(PREFIX) :].split("/") if p]
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "report":
            if request.method != "POST":
                raise errors.MethodNotAllowed(f"{request.method} is not supported on nodes/report: POST a report")
            return await self.report(request, parts[1])
        namespace: str | None = None
        if len(parts) >= 3 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
        if not parts or len(parts) > 2 or parts[0] not in ("nodes", "pods"):
            raise errors.NotFound("the server could not find the requested resource")
        rt = NODE_METRICS if parts[0] == "nodes" else POD_METRICS
        if namespace is not None and not rt.namespaced:
            raise errors.NotFound("the server could not find the requested resource")
        if request.method not in ("GET", "HEAD"):
            raise errors.MethodNotAllowed(
                f"the server does not allow this method on the requested resource ({request.method} "
                f"{rt.group_resource}): metrics are read-only"
            )
        if request.query.get("watch") in ("true", "1", "True"):
            raise errors.MethodNotAllowed(f"the server does not allow watch on {rt.group_resource}")
        shape = content.accept(request)
        if len(parts) == 2:
            item = await self.get(rt, namespace, parts[1])
            if shape == "table":
                return self._table(request, rt, [item])
            return content.json_response(partial_metadata(item) if shape == "partial" else item)
        items = await self.list(
            rt, namespace, request.query.get("labelSelector", ""), request.query.get("fieldSelector", "")
        )
        if shape == "table":
            return self._table(request, rt, items)
        if shape == "partial":
            listed = {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {}}
            return content.json_response({**listed, "items": [partial_metadata(i) for i in items]})
        return content.json_response({"kind": rt.list_kind, "apiVersion": API_VERSION, "metadata": {}, "items": items})

    def _table(self, request: web.Request, rt: ResourceType, items: list[Obj]) -> web.Response:
        include = include_object_param(request.query.get("includeObject"))
        return content.json_response(metrics_table(rt, items, include), content_type=content.TABLE_CT)

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        source_rt = self._source(rt)
        try:
            source = await self.store.get(source_rt, namespace, name)
        except errors.NotFound:
            raise not_found(rt, name) from None
        item = self._join(rt, source)
        if item is None:
            raise not_found(rt, name)
        return item

    async def list(
        self, rt: ResourceType, namespace: str | None, label_selector: str, field_selector: str
    ) -> list[Obj]:
        self.metrics.expire()
        opts = ListOptions(label_selector=label_selector, field_selector=field_selector)
        listed = await self.store.list(self._source(rt), namespace, opts)
        items = [self._join(rt, obj) for obj in listed["items"]]
        return [i for i in items if i is not None]

    def _source(self, rt: ResourceType) -> ResourceType:
        source = self.registry.get("", "v1", rt.plural)
        if source is None:  # pragma: no cover - the core kinds are always registered
            raise errors.InternalError(f"no core {rt.plural} to join metrics with")
        return source

    def _join(self, rt: ResourceType, obj: Obj) -> Obj | None:
        meta = obj.get("metadata") or {}
        if rt is NODE_METRICS:
            node_sample = self.metrics.node(meta.get("name", ""))
            return node_metrics(obj, node_sample) if node_sample is not None else None
        pod_sample = self.metrics.pod(meta.get("namespace", ""), meta.get("name", ""))
        if pod_sample is None or (pod_sample.uid and pod_sample.uid != meta.get("uid")):
            return None
        return pod_metrics(obj, pod_sample)

    async def report(self, request: web.Request, node: str) -> web.Response:
        body = content.decode_body(await content.read_body(request), content.media_type(request))
        self.metrics.report(node, body)
        return content.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}
        )


METRICS = web.AppKey("metrics", MetricsAPI)


def setup_metrics(app: web.Application, registry: Registry, store: Store) -> MetricsAPI:
    """Register the metrics kinds (for discovery) and their routes (ahead of the generic REST catch-all)."""
    registry.add(NODE_METRICS)
    registry.add(POD_METRICS)
    api = MetricsAPI(store, registry)
    app[METRICS] = api
    app.router.add_route("*", PREFIX + "/{tail:.+}", api.handle)
    return api
