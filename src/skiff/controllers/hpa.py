"""The HorizontalPodAutoscaler controller: sets a workload's replicas from its pods' usage.

Kubernetes' `pkg/controller/podautoscaler` (autoscaling/v2). Every
`hpa_sync_period` (15 s) per HPA: read the target's scale subresource
(`GET …/<kind>/<name>/scale`, so Deployments, ReplicaSets, StatefulSets and
custom resources with a scale subresource alike), whose `status.selector`
names the pods; read their usage from the metrics API
(`GET /apis/metrics.k8s.io/v1beta1/namespaces/<ns>/pods?labelSelector=…`)
and their requests from the pod cache; compute a proposal per metric and
take the largest (`hpa_math`); stabilize and rate-limit it (`spec.behavior`,
or the classic rules when there is none); `PATCH …/scale` when it differs;
and record `status` (currentReplicas, desiredReplicas, currentMetrics,
lastScaleTime, the AbleToScale / ScalingActive / ScalingLimited conditions)
and events (SuccessfulRescale, FailedGetResourceMetric, …) with Kubernetes'
reasons and wording, so `kubectl describe hpa` reads the same.

Resource and ContainerResource metrics (cpu, memory; Utilization and
AverageValue targets) are computed; Pods, Object and External metrics need
the custom/external metrics APIs, which skiff does not serve: they fail
with Kubernetes' reasons. Recommendations and scale events live in memory,
as in Kubernetes: a restarted controller starts its windows afresh.

Options: `hpa_sync_period` and `hpa_downscale_stabilization` (flags of
`skiff server` / `skiff controller-manager`); in `ControllerOptions.extra`,
`hpa_tolerance` (0.1), `hpa_cpu_initialization_period` (300 s) and
`hpa_initial_readiness_delay` (30 s), as kube-controller-manager's
`--horizontal-pod-autoscaler-*` flags.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skiff.api import errors, quantity
from skiff.api.selectors import LabelSelector, parse_label_selector
from skiff.client import Controller, RequeueAfter, Resource, ServerUnreachable, object_key, resources
from skiff.client.cache import index_by_namespace
from skiff.controllers import hpa_math as hm
from skiff.controllers.context import ControllerContext

log = logging.getLogger(__name__)

Obj = dict[str, Any]
COMPONENT = "horizontal-pod-autoscaler"
NAMESPACE_INDEX = "namespace"
POD_METRICS = Resource("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", True)
MAPPING_TTL = 30.0  # how long a discovered kind → resource mapping is trusted
DEFAULT_METRICS = [
    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}
]
_FAILURES = (errors.StatusError, ServerUnreachable, hm.CalculationError)


class Failed(Exception):
    """This round failed; already recorded in status and events. Look again next period."""


@dataclass
class MetricFailure(Exception):
    """One metric could not be computed: the error and the ScalingActive condition it sets."""

    message: str
    condition: hm.Condition

    def __str__(self) -> str:
        return self.message


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HorizontalController(Controller):
    name = "horizontalpodautoscaling"
    workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        opts = ctx.options
        self.client = ctx.client
        self.recorder = ctx.recorder(COMPONENT)
        self.sync_period = opts.hpa_sync_period
        self.downscale_stabilization = opts.hpa_downscale_stabilization
        self.tolerance = float(opts.extra.get("hpa_tolerance", hm.DEFAULT_TOLERANCE))
        self.timing = {
            "cpu_initialization_period": float(
                opts.extra.get("hpa_cpu_initialization_period", hm.CPU_INITIALIZATION_PERIOD)
            ),
            "initial_readiness_delay": float(opts.extra.get("hpa_initial_readiness_delay", hm.INITIAL_READINESS_DELAY)),
        }
        self.clock = time.time
        self.history: dict[str, hm.History] = {}
        self._mappings: dict[tuple[str, str], tuple[Resource, float]] = {}
        self.hpas = self.wait_for(ctx.informers.informer(resources.HPAS))
        self.hpas.add_handlers(on_add=self.enqueue, on_update=self._updated, on_delete=self._deleted)
        self.pods = self.wait_for(ctx.informers.informer(resources.PODS))
        try:
            self.pods.add_index(NAMESPACE_INDEX, index_by_namespace)
        except ValueError:
            pass  # a controller sharing the pod informer added it already

    # --- events from the informer -------------------------------------------------------------
    def _updated(self, old: Obj, new: Obj) -> None:
        """Only a changed spec is looked at at once; our own status writes wait for the next period."""
        if old.get("spec") != new.get("spec"):
            self.enqueue(new)

    def _deleted(self, obj: Obj) -> None:
        self.history.pop(object_key(obj), None)

    # --- the loop -----------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        hpa = self.hpas.get(key)
        if hpa is None:
            self.history.pop(key, None)
            return
        try:
            await self.reconcile_autoscaler(copy.deepcopy(hpa), key)
        except asyncio.CancelledError:
            raise
        except (Failed, *_FAILURES) as exc:
            self.log.info("%s: %s", key, exc)
        except Exception:
            self.log.exception("%s: reconcile failed", key)
        raise RequeueAfter(self.sync_period)

    async def reconcile_autoscaler(self, hpa: Obj, key: str) -> None:
        """One look at one HPA: Kubernetes' `reconcileAutoscaler`."""
        now = self.clock()
        original = copy.deepcopy(hpa.get("status") or {})
        hpa["status"] = copy.deepcopy(original)
        meta, spec = hpa["metadata"], hpa.get("spec") or {}
        namespace = meta.get("namespace", "")
        ref = spec.get("scaleTargetRef") or {}
        reference = f"{ref.get('kind')}/{namespace}/{ref.get('name')}"
        try:
            target = await self.scale_resource(ref)
            scale = await self.client.get(target, str(ref.get("name")), namespace=namespace, subresource="scale")
        except _FAILURES as exc:
            await self.event(hpa, "Warning", "FailedGetScale", str(exc))
            self.condition(hpa, "AbleToScale", "False", "FailedGetScale",
                           f"the HPA controller was unable to get the target's current scale: {exc}")  # fmt: skip
            await self.update_status_if_needed(original, hpa)
            raise Failed(f"failed to query scale subresource for {reference}: {exc}") from exc
        self.condition(hpa, "AbleToScale", "True", "SucceededGetScale",
                       "the HPA controller was able to get the target's current scale")  # fmt: skip
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        history = self.history.setdefault(key, hm.History())
        history.record_initial(current, now)
        min_replicas = int(spec.get("minReplicas", 1))
        max_replicas = int(spec.get("maxReplicas", 0))
        behavior = spec.get("behavior")
        up = hm.scaling_rules((behavior or {}).get("scaleUp"), up=True, downscale_stabilization=0)
        down = hm.scaling_rules(
            (behavior or {}).get("scaleDown"), up=False, downscale_stabilization=self.downscale_stabilization
        )
        statuses: list[Obj] = []
        desired, reason, rescale = 0, "", True
        partial_error: Exception | None = None
        if current == 0 and min_replicas != 0:
            rescale = False
            self.condition(hpa, "ScalingActive", "False", "ScalingDisabled",
                           "scaling is disabled since the replica count of the target is zero")  # fmt: skip
        elif current > max_replicas:
            reason, desired = "Current number of replicas above Spec.MaxReplicas", max_replicas
        elif current < min_replicas:
            reason, desired = "Current number of replicas below Spec.MinReplicas", min_replicas
        else:
            tolerances = hm.tolerances_for(up if behavior else None, down if behavior else None, self.tolerance)
            proposal, metric, statuses, error = await self.replicas_for_metrics(hpa, scale, tolerances, now)
            if error is not None and proposal == -1:
                self.set_status(hpa, current, hpa["status"].get("desiredReplicas", 0), statuses, False, now)
                await self.update_status_if_needed(original, hpa)
                await self.event(hpa, "Warning", "FailedComputeMetricsReplicas", str(error))
                raise Failed(
                    f"failed to compute desired number of replicas based on listed metrics for {reference}: {error}"
                )
            partial_error = error
            rescale_metric = ""
            if proposal > desired:
                desired, rescale_metric = proposal, metric
            if desired > current:
                reason = f"{rescale_metric} above target"
            if desired < current:
                reason = "All metrics below target"
            if behavior:
                desired, conditions = hm.normalize_with_behaviors(
                    history, current, desired, min_replicas, max_replicas, up=up, down=down, now=now
                )
            else:
                desired, conditions = hm.normalize(
                    history, current, desired, min_replicas, max_replicas,
                    downscale_window=self.downscale_stabilization, now=now,
                )  # fmt: skip
            for cond in conditions:
                self.condition(hpa, cond.type, cond.status, cond.reason, cond.message)
            rescale = desired != current
        if rescale:
            try:
                await self.rescale(target, namespace, scale, desired)
            except _FAILURES as exc:
                await self.event(
                    hpa, "Warning", "FailedRescale", f"New size: {desired}; reason: {reason}; error: {exc}"
                )
                self.condition(hpa, "AbleToScale", "False", "FailedUpdateScale",
                               f"the HPA controller was unable to update the target scale: {exc}")  # fmt: skip
                self.set_status(hpa, current, hpa["status"].get("desiredReplicas", 0), statuses, False, now)
                await self.update_status_if_needed(original, hpa)
                raise Failed(f"failed to rescale {reference}: {exc}") from exc
            self.condition(hpa, "AbleToScale", "True", "SucceededRescale",
                           f"the HPA controller was able to update the target scale to {desired}")  # fmt: skip
            await self.event(hpa, "Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
            if behavior:
                history.store_scale_event(up, down, current, desired, now)
            self.log.info("%s: rescaled %s from %d to %d: %s", key, reference, current, desired, reason)
        else:
            desired = current
        self.set_status(hpa, current, desired, statuses, rescale, now)
        await self.update_status_if_needed(original, hpa)
        if partial_error is not None:
            raise Failed(str(partial_error))

    # --- the scale target ---------------------------------------------------------------------
    async def scale_resource(self, ref: Obj) -> Resource:
        """The resource serving `scaleTargetRef` (built-in, or found through discovery, cached a while)."""
        api_version, kind = str(ref.get("apiVersion") or ""), str(ref.get("kind") or "")
        if api_version.count("/") > 1 or not kind:
            raise hm.CalculationError(f"unexpected GroupVersion string: {api_version}")
        builtin = resources.by_kind(api_version, kind)
        if builtin is not None:
            return builtin
        cached = self._mappings.get((api_version, kind))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            doc = await self.client.request("GET", path)
        except errors.NotFound:
            doc = {}
        for entry in doc.get("resources") or []:
            if entry.get("kind") == kind and "/" not in str(entry.get("name", "")):
                found = Resource(group, version, str(entry["name"]), kind, bool(entry.get("namespaced")))
                self._mappings[(api_version, kind)] = (found, time.monotonic() + MAPPING_TTL)
                return found
        raise hm.CalculationError(f'no matches for kind "{kind}" in group "{group}"')

    async def rescale(self, target: Resource, namespace: str, scale: Obj, replicas: int) -> None:
        """PATCH the scale, guarded by the resourceVersion read; if only the status moved meanwhile, go again."""
        name = scale["metadata"]["name"]
        for _ in range(3):
            patch = {
                "metadata": {"resourceVersion": scale["metadata"].get("resourceVersion")},
                "spec": {"replicas": replicas},
            }
            try:
                await self.client.patch(target, name, patch, namespace=namespace, subresource="scale")
                return
            except errors.Conflict:
                fresh = await self.client.get(target, name, namespace=namespace, subresource="scale")
                if (fresh.get("spec") or {}).get("replicas") != (scale.get("spec") or {}).get("replicas"):
                    raise  # someone else scaled it: decide again next period
                scale = fresh
        raise errors.Conflict(f"the scale of {target.plural}/{name} keeps changing")

    # --- metrics ------------------------------------------------------------------------------
    async def replicas_for_metrics(
        self, hpa: Obj, scale: Obj, tolerances: hm.Tolerances, now: float
    ) -> tuple[int, str, list[Obj], Exception | None]:
        """`computeReplicasForMetrics`: the largest proposal over all metrics, their statuses, and an error."""
        raw_selector = (scale.get("status") or {}).get("selector") or ""
        if not raw_selector:
            await self.event(hpa, "Warning", "SelectorRequired", "selector is required")
            self.condition(
                hpa, "ScalingActive", "False", "InvalidSelector", "the HPA target's scale is missing a selector"
            )
            return -1, "", [], hm.CalculationError("selector is required")
        try:
            selector = parse_label_selector(raw_selector)
        except errors.StatusError as exc:
            message = f"couldn't convert selector into a corresponding internal selector object: {exc}"
            await self.event(hpa, "Warning", "InvalidSelector", message)
            self.condition(hpa, "ScalingActive", "False", "InvalidSelector", message)
            return -1, "", [], hm.CalculationError(message)
        specs: list[Obj] = (hpa.get("spec") or {}).get("metrics") or DEFAULT_METRICS
        spec_replicas = int((scale.get("spec") or {}).get("replicas") or 0)
        statuses: list[Obj] = [{"type": ""} for _ in specs]
        replicas, metric = 0, ""
        invalid = 0
        first: MetricFailure | None = None
        for i, metric_spec in enumerate(specs):
            try:
                proposal, name, statuses[i] = await self.replicas_for_metric(
                    hpa, metric_spec, spec_replicas, raw_selector, selector, tolerances, now
                )
            except MetricFailure as failure:
                first = first or failure
                invalid += 1
                continue
            if replicas == 0 or proposal > replicas:
                replicas, metric = proposal, name
        error = None
        if first is not None:
            error = hm.CalculationError(
                f"invalid metrics ({invalid} invalid out of {len(specs)}), first error is: {first}"
            )
        if invalid >= len(specs) or (invalid > 0 and replicas < spec_replicas):
            if first is not None:
                c = first.condition
                self.condition(hpa, c.type, c.status, c.reason, c.message)
            return -1, "", statuses, error
        self.condition(hpa, "ScalingActive", "True", "ValidMetricFound",
                       f"the HPA was able to successfully calculate a replica count from {metric}")  # fmt: skip
        return replicas, metric, statuses, error

    async def replicas_for_metric(
        self,
        hpa: Obj,
        spec: Obj,
        current: int,
        raw_selector: str,
        selector: LabelSelector,
        tolerances: hm.Tolerances,
        now: float,
    ) -> tuple[int, str, Obj]:
        """`computeReplicasForMetric`: one metric's proposal, its name for messages, its status."""
        kind = spec.get("type")
        if kind in ("Resource", "ContainerResource"):
            source = spec.get("resource" if kind == "Resource" else "containerResource") or {}
            container = str(source.get("container") or "") if kind == "ContainerResource" else ""
            resource = str(source.get("name") or "")
            reason = "FailedGetResourceMetric" if kind == "Resource" else "FailedGetContainerResourceMetric"
            what = f"{resource} resource" if kind == "Resource" else f"{resource} container resource"
            try:
                replicas, name, current_value = await self.resource_proposal(
                    hpa, source.get("target") or {}, resource, container, current, raw_selector, selector,
                    tolerances, now,
                )  # fmt: skip
            except hm.CalculationError as exc:
                condition = await self.unable_to_compute(hpa, reason, str(exc))
                raise MetricFailure(f"failed to get {what} metric value: {exc}", condition) from exc
            key = "resource" if kind == "Resource" else "containerResource"
            body: Obj = {"name": resource, "current": current_value}
            if container:
                body["container"] = container
            return replicas, name, {"type": kind, key: body}
        unsupported = {
            "Pods": ("FailedGetPodsMetric", "pods metric", "custom.metrics.k8s.io"),
            "Object": ("FailedGetObjectMetric", "object metric", "custom.metrics.k8s.io"),
            "External": ("FailedGetExternalMetric", "external metric", "external.metrics.k8s.io"),
        }
        if kind in unsupported:
            reason, what, api = unsupported[kind]
            metric_name = ((spec.get(str(kind).lower()) or {}).get("metric") or {}).get("name", "")
            cause = f"unable to get metric {metric_name}: unable to fetch metrics from {api}: the API is not served"
            condition = await self.unable_to_compute(hpa, reason, cause)
            raise MetricFailure(f"failed to get {what} value: {cause}", condition)
        cause = f'unknown metric source type "{kind}"'
        condition = await self.unable_to_compute(hpa, "InvalidMetricSourceType", cause)
        raise MetricFailure(cause, condition)

    async def resource_proposal(
        self,
        hpa: Obj,
        target: Obj,
        resource: str,
        container: str,
        current: int,
        raw_selector: str,
        selector: LabelSelector,
        tolerances: hm.Tolerances,
        now: float,
    ) -> tuple[int, str, Obj]:
        """`computeStatusForResourceMetricGeneric`: a Utilization or AverageValue target of cpu/memory."""
        namespace = hpa["metadata"].get("namespace", "")
        average_value = target.get("averageValue")
        utilization = target.get("averageUtilization")
        if average_value is None and utilization is None:
            raise hm.CalculationError(
                "invalid resource metric source: neither an average utilization target "
                "nor an average value (usage) target was set"
            )
        what = "usage" if average_value is not None else "utilization"
        try:
            metrics = await self.resource_metrics(namespace, raw_selector, resource, container)
            pods = [
                p
                for p in self.pods.by_index(NAMESPACE_INDEX, namespace)
                if selector.matches(p["metadata"].get("labels"))
            ]
            if average_value is not None:
                replicas, usage = hm.raw_resource_replicas(
                    current, quantity.milli_value(average_value), resource, pods, metrics,
                    now=now, tolerances=tolerances, **self.timing,
                )  # fmt: skip
                return replicas, f"{resource} resource", {"averageValue": quantity.format_milli(usage)}
            replicas, percent, raw = hm.resource_replicas(
                current, int(utilization or 0), resource, pods, metrics,
                now=now, tolerances=tolerances, container=container, **self.timing,
            )  # fmt: skip
        except hm.CalculationError as exc:
            raise hm.CalculationError(f"failed to get {resource} {what}: {exc}") from exc
        name = f"{resource} {'container ' if container else ''}resource utilization (percentage of request)"
        return replicas, name, {"averageUtilization": percent, "averageValue": quantity.format_milli(raw)}

    async def resource_metrics(
        self, namespace: str, selector: str, resource: str, container: str
    ) -> dict[str, hm.PodMetric]:
        """`GetResourceMetric`: the pods' usage from the metrics API."""
        try:
            listed = await self.client.list(POD_METRICS, namespace=namespace, label_selector=selector)
        except (errors.StatusError, ServerUnreachable) as exc:
            raise hm.CalculationError(
                f"unable to get metrics for resource {resource}: "
                f"unable to fetch metrics from resource metrics API: {exc}"
            ) from exc
        items = listed.get("items") or []
        if not items:
            raise hm.CalculationError(
                f"unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
            )
        return hm.pod_metrics(items, resource, container)

    # --- status and events --------------------------------------------------------------------
    async def unable_to_compute(self, hpa: Obj, reason: str, message: str) -> hm.Condition:
        """`getUnableComputeReplicaCountCondition`: a warning event, and the condition to set if all fail."""
        await self.event(hpa, "Warning", reason, message)
        return hm.Condition(
            "ScalingActive", "False", reason, f"the HPA was unable to compute the replica count: {message}"
        )

    def condition(self, hpa: Obj, type_: str, status: str, reason: str, message: str) -> None:
        st = hpa.setdefault("status", {})
        st["conditions"] = hm.set_condition(
            st.get("conditions") or [], hm.Condition(type_, status, reason, message), rfc3339(self.clock())
        )

    def set_status(self, hpa: Obj, current: int, desired: int, metrics: list[Obj], rescaled: bool, now: float) -> None:
        old = hpa.get("status") or {}
        status: Obj = {"currentReplicas": current, "desiredReplicas": desired}
        last = rfc3339(now) if rescaled else old.get("lastScaleTime")
        if last:
            status["lastScaleTime"] = last
        if metrics:
            status["currentMetrics"] = metrics
        if old.get("conditions"):
            status["conditions"] = old["conditions"]
        hpa["status"] = status

    async def update_status_if_needed(self, original: Obj, hpa: Obj) -> None:
        if hpa.get("status") == original:
            return
        try:
            await self.client.update_status(resources.HPAS, hpa)
        except errors.Conflict:
            fresh = await self.client.get(
                resources.HPAS, hpa["metadata"]["name"], namespace=hpa["metadata"]["namespace"]
            )
            fresh["status"] = hpa["status"]
            await self.client.update_status(resources.HPAS, fresh)
        except (errors.StatusError, ServerUnreachable) as exc:
            await self.event(hpa, "Warning", "FailedUpdateStatus", str(exc))
            raise

    async def event(self, hpa: Obj, type_: str, reason: str, message: str) -> None:
        await self.recorder.record(hpa, type=type_, reason=reason, message=message)


def new(ctx: ControllerContext) -> Controller:
    return HorizontalController(ctx)
