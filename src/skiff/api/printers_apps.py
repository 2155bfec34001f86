"""Table printers for apps, batch and autoscaling: Deployment, Job, CronJob, HPA, ….

Ports of Kubernetes' pkg/printers/internalversion, so `kubectl get deploy`
shows READY "2/3", UP-TO-DATE and AVAILABLE, `get jobs` STATUS/COMPLETIONS/
DURATION, `get hpa` TARGETS "cpu: 50%/80%" as kube-apiserver computes them.
Objects may arrive as stored, without server-side defaults applied; where
Kubernetes would have defaulted a field a cell shows (replicas, completions,
suspend, minReplicas, an HPA's CPU target), the printer uses that default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skiff.api.humanize import human_duration, parse_time, since
from skiff.api.printers import (
    AGE,
    CONTAINERS_DESC,
    IMAGES_DESC,
    NAME,
    Cell,
    Obj,
    Printer,
    age,
    as_dict,
    as_int,
    as_list,
    as_str,
    column,
    container_cells,
    deleting,
    dig,
    format_label_selector,
    format_labels,
    meta,
    name_of,
    quantity,
    selector_string,
    wide,
)


def _replicas(spec: Obj) -> int:
    """spec.replicas, defaulted to 1 as the API server does."""
    return as_int(spec["replicas"]) if "replicas" in spec else 1


def _template_cells(obj: Obj, *path: str) -> tuple[str, str]:
    return container_cells(dig(obj, *path, "template", "spec"))


# --- apps -----------------------------------------------------------------------------------------------


def deployment_row(d: Obj, now: datetime) -> list[Cell]:
    spec, status = as_dict(d.get("spec")), as_dict(d.get("status"))
    selector = selector_string(spec.get("selector"))
    return [
        name_of(d),
        f"{as_int(status.get('readyReplicas'))}/{_replicas(spec)}",
        as_int(status.get("updatedReplicas")),
        as_int(status.get("availableReplicas")),
        age(d, now),
        *_template_cells(d, "spec"),
        "<invalid>" if selector is None else selector,
    ]


def replica_set_row(rs: Obj, now: datetime) -> list[Cell]:
    spec, status = as_dict(rs.get("spec")), as_dict(rs.get("status"))
    return [
        name_of(rs),
        _replicas(spec),
        as_int(status.get("replicas")),
        as_int(status.get("readyReplicas")),
        age(rs, now),
        *_template_cells(rs, "spec"),
        format_label_selector(spec.get("selector")),
    ]


def daemon_set_row(ds: Obj, now: datetime) -> list[Cell]:
    spec, status = as_dict(ds.get("spec")), as_dict(ds.get("status"))
    return [
        name_of(ds),
        as_int(status.get("desiredNumberScheduled")),
        as_int(status.get("currentNumberScheduled")),
        as_int(status.get("numberReady")),
        as_int(status.get("updatedNumberScheduled")),
        as_int(status.get("numberAvailable")),
        format_labels(dig(spec, "template", "spec", "nodeSelector")),
        age(ds, now),
        *_template_cells(ds, "spec"),
        format_label_selector(spec.get("selector")),
    ]


def stateful_set_row(sts: Obj, now: datetime) -> list[Cell]:
    spec = as_dict(sts.get("spec"))
    ready = as_int(dig(sts, "status", "readyReplicas"))
    return [
        name_of(sts),
        f"{ready}/{_replicas(spec)}",
        age(sts, now),
        *_template_cells(sts, "spec"),
    ]


def controller_revision_row(cr: Obj, now: datetime) -> list[Cell]:
    controller = "<none>"
    for ref in as_list(meta(cr).get("ownerReferences")):
        r = as_dict(ref)
        if r.get("controller") is True:
            api_version = as_str(r.get("apiVersion"))
            group = api_version.split("/")[0] if "/" in api_version else ""
            kind = as_str(r.get("kind"))
            group_kind = f"{kind}.{group}" if group else kind
            controller = f"{group_kind.lower()}/{as_str(r.get('name'))}" if kind else as_str(r.get("name"))
            break
    return [
        name_of(cr),
        controller,
        as_int(cr.get("revision")),
        age(cr, now),
    ]


# --- batch ----------------------------------------------------------------------------------------------


def _condition(conditions: Any, type_: str) -> bool:
    for c in as_list(conditions):
        if as_dict(c).get("type") == type_:
            return as_dict(c).get("status") == "True"
    return False


def job_row(job: Obj, now: datetime) -> list[Cell]:
    spec, status = as_dict(job.get("spec")), as_dict(job.get("status"))
    succeeded = as_int(status.get("succeeded"))
    completions, parallelism = spec.get("completions"), spec.get("parallelism")
    if completions is None and parallelism is None:
        completions = 1  # the API server defaults both to 1
    if completions is not None:
        completions_cell = f"{succeeded}/{as_int(completions)}"
    elif as_int(parallelism) > 1:
        completions_cell = f"{succeeded}/1 of {as_int(parallelism)}"
    else:
        completions_cell = f"{succeeded}/1"
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = human_duration((end or now) - start)
    conds = status.get("conditions")
    if _condition(conds, "Complete"):
        state = "Complete"
    elif _condition(conds, "Failed"):
        state = "Failed"
    elif deleting(job):
        state = "Terminating"
    elif _condition(conds, "Suspended"):
        state = "Suspended"
    elif _condition(conds, "FailureTarget"):
        state = "FailureTarget"
    else:
        state = "Running"
    return [
        name_of(job),
        state,
        completions_cell,
        duration,
        age(job, now),
        *_template_cells(job, "spec"),
        format_label_selector(spec.get("selector")),
    ]


def cron_job_row(cj: Obj, now: datetime) -> list[Cell]:
    spec, status = as_dict(cj.get("spec")), as_dict(cj.get("status"))
    last = status.get("lastScheduleTime")
    suspend = spec.get("suspend", False)  # defaulted to false by the API server
    return [
        name_of(cj),
        as_str(spec.get("schedule")),
        as_str(spec.get("timeZone")) or "<none>",
        ("True" if suspend else "False") if isinstance(suspend, bool) else "<unset>",
        len(as_list(status.get("active"))),
        since(last, now) if last else "<none>",
        age(cj, now),
        *_template_cells(cj, "spec", "jobTemplate", "spec"),
        format_label_selector(dig(spec, "jobTemplate", "spec", "selector")),
    ]


# --- autoscaling ----------------------------------------------------------------------------------------


def _hpa_metrics(hpa: Obj) -> tuple[list[Any], list[Any]]:
    """spec.metrics and status.currentMetrics, from an autoscaling/v2 or v1 object."""
    spec, status = as_dict(hpa.get("spec")), as_dict(hpa.get("status"))
    metrics, current = as_list(spec.get("metrics")), as_list(status.get("currentMetrics"))
    if not metrics:
        target = spec.get("targetCPUUtilizationPercentage", 80)  # v1 and v2 both default to 80% CPU
        metrics = [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}},
            }
        ]
    if not current and "currentCPUUtilizationPercentage" in status:
        current = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "current": {"averageUtilization": status["currentCPUUtilizationPercentage"]},
                },
            }
        ]
    return metrics, current


def _value_metric(spec: Obj, status: Any) -> str:
    """External and Object metrics: an average or a plain value."""
    target, cur = as_dict(spec.get("target")), as_dict(dig(status, "current"))
    current = "<unknown>"
    if target.get("averageValue") is not None:
        if isinstance(status, dict) and cur.get("averageValue") is not None:
            current = quantity(cur["averageValue"])
        return f"{current}/{quantity(target['averageValue'])} (avg)"
    if isinstance(status, dict):
        current = quantity(cur.get("value"))
    return f"{current}/{quantity(target.get('value'))}"


def _resource_metric(spec: Obj, status: Any) -> str:
    target, cur = as_dict(spec.get("target")), as_dict(dig(status, "current"))
    name = as_str(spec.get("name"))
    if target.get("averageValue") is not None:
        current = quantity(cur.get("averageValue")) if isinstance(status, dict) else "<unknown>"
        return f"{name}: {current}/{quantity(target['averageValue'])}"
    current = "<unknown>"
    if isinstance(status, dict) and cur.get("averageUtilization") is not None:
        current = f"{as_int(cur['averageUtilization'])}%"
    util = target.get("averageUtilization")
    return f"{name}: {current}/{f'{as_int(util)}%' if util is not None else '<auto>'}"


def hpa_targets(hpa: Obj) -> str:
    """`formatHPAMetrics`: at most two metrics as "current/target", then " + N more..."."""
    metrics, statuses = _hpa_metrics(hpa)
    out: list[str] = []
    for i, raw in enumerate(metrics):
        m = as_dict(raw)
        kind = as_str(m.get("type"))
        key = {
            "External": "external",
            "Pods": "pods",
            "Object": "object",
            "Resource": "resource",
            "ContainerResource": "containerResource",
        }.get(kind)
        status = dig(statuses, i, key) if key and i < len(statuses) else None
        spec = as_dict(m.get(key)) if key else {}
        if kind in ("External", "Object"):
            out.append(_value_metric(spec, status))
        elif kind == "Pods":
            current = (
                quantity(dig(status, "current", "averageValue")) if isinstance(status, dict) else "<unknown>"
            )
            out.append(f"{current}/{quantity(dig(spec, 'target', 'averageValue'))}")
        elif kind in ("Resource", "ContainerResource"):
            out.append(_resource_metric(spec, status))
        else:
            out.append("<unknown type>")
    if len(out) > 2:
        return f"{', '.join(out[:2])} + {len(out) - 2} more..."
    return ", ".join(out)


def hpa_row(hpa: Obj, now: datetime) -> list[Cell]:
    spec = as_dict(hpa.get("spec"))
    ref = as_dict(spec.get("scaleTargetRef"))
    min_pods = spec.get("minReplicas", 1)  # defaulted to 1 by the API server
    return [
        name_of(hpa),
        f"{as_str(ref.get('kind'))}/{as_str(ref.get('name'))}",
        hpa_targets(hpa),
        str(as_int(min_pods)) if min_pods is not None else "<unset>",
        as_int(spec.get("maxReplicas")),
        as_int(dig(hpa, "status", "currentReplicas")),
        age(hpa, now),
    ]


_READY_DESC = "Number of the pod with ready state"

APPS: dict[tuple[str, str], Printer] = {
    ("apps", "Deployment"): Printer(
        (
            NAME,
            column("Ready", desc=_READY_DESC),
            column(
                "Up-to-date",
                desc="Total number of non-terminated pods targeted by this deployment that have the "
                "desired template spec.",
            ),
            column(
                "Available",
                desc="Total number of available pods (ready for at least minReadySeconds) targeted "
                "by this deployment.",
            ),
            AGE,
            wide("Containers", CONTAINERS_DESC),
            wide("Images", IMAGES_DESC),
            wide(
                "Selector",
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be "
                "the ones affected by this deployment.",
            ),
        ),
        deployment_row,
    ),
    ("apps", "ReplicaSet"): Printer(
        (
            NAME,
            column("Desired", "integer", "Replicas is the number of desired replicas."),
            column("Current", "integer", "Replicas is the most recently observed number of replicas."),
            column("Ready", "integer", "The number of ready replicas for this replica set."),
            AGE,
            wide("Containers", CONTAINERS_DESC),
            wide("Images", IMAGES_DESC),
            wide("Selector", "Selector is a label query over pods that should match the replica count."),
        ),
        replica_set_row,
    ),
    ("apps", "DaemonSet"): Printer(
        (
            NAME,
            column("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
            column(
                "Current",
                "integer",
                "The number of nodes that are running at least 1 daemon pod and are "
                "supposed to run the daemon pod.",
            ),
            column(
                "Ready",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or "
                "more of the daemon pod running and ready.",
            ),
            column("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
            column(
                "Available",
                "integer",
                "The number of nodes that should be running the daemon pod and have one "
                "or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            column(
                "Node Selector",
                desc="NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            AGE,
            wide("Containers", CONTAINERS_DESC),
            wide("Images", IMAGES_DESC),
            wide("Selector", "A label query over pods that are managed by the daemon set."),
        ),
        daemon_set_row,
    ),
    ("apps", "StatefulSet"): Printer(
        (
            NAME,
            column("Ready", desc=_READY_DESC),
            AGE,
            wide("Containers", CONTAINERS_DESC),
            wide("Images", IMAGES_DESC),
        ),
        stateful_set_row,
    ),
    ("apps", "ControllerRevision"): Printer(
        (
            NAME,
            column("Controller", desc="Controller of the object"),
            column("Revision", desc="Revision indicates the revision of the state represented by Data."),
            AGE,
        ),
        controller_revision_row,
    ),
    ("batch", "Job"): Printer(
        (
            NAME,
            column("Status", desc="Status of the job."),
            column("Completions", desc="The number of pods which reached phase Succeeded."),
            column("Duration", desc="Time required to complete the job."),
            AGE,
            wide("Containers", CONTAINERS_DESC),
            wide("Images", IMAGES_DESC),
            wide("Selector", "A label query over pods that should match the pod count."),
        ),
        job_row,
    ),
    ("batch", "CronJob"): Printer(
        (
            NAME,
            column("Schedule", desc="The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            column(
                "Timezone",
                desc="The time zone name for the given schedule, see "
                "https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
            ),
            column(
                "Suspend",
                "boolean",
                "This flag tells the controller to suspend subsequent executions, it does "
                "not apply to already started executions. Defaults to false.",
            ),
            column("Active", "integer", "A list of pointers to currently running jobs."),
            column(
                "Last Schedule", desc="Information when was the last time the job was successfully scheduled."
            ),
            AGE,
            wide("Containers", CONTAINERS_DESC),
            wide("Images", IMAGES_DESC),
            wide("Selector", "A label query over pods that should match the pod count."),
        ),
        cron_job_row,
    ),
    ("autoscaling", "HorizontalPodAutoscaler"): Printer(
        (
            NAME,
            column(
                "Reference",
                desc="reference to scaled resource; horizontal pod autoscaler will learn the "
                "current resource consumption and will set the desired number of pods by using its Scale "
                "subresource.",
            ),
            column(
                "Targets",
                desc="metrics contains the specifications for which to use to calculate the desired "
                "replica count.",
            ),
            column(
                "MinPods",
                desc="minReplicas is the lower limit for the number of replicas to which the "
                "autoscaler can scale down.",
            ),
            column(
                "MaxPods",
                desc="maxReplicas is the upper limit for the number of replicas to which the "
                "autoscaler can scale up.",
            ),
            column(
                "Replicas",
                desc="currentReplicas is current number of replicas of pods managed by this "
                "autoscaler, as last seen by the autoscaler.",
            ),
            AGE,
        ),
        hpa_row,
    ),
}
