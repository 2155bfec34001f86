"""A Job's `podFailurePolicy`: which rule, if any, a failed pod matches, and what it says to do.

Kubernetes' `matchPodFailurePolicy` (pkg/controller/job/pod_failure_policy.go),
pure, so the rule matching is tested without a server. The Job controller
acts on the answer while it counts finished pods (`job_sync`): FailJob fails
the job at once (reason PodFailurePolicy, with the message returned here),
Ignore releases the pod uncounted, Count counts it. FailIndex (with
backoffLimitPerIndex) is not supported.
"""

from __future__ import annotations

from typing import Any

from skiff.controllers.workloads import meta

Obj = dict[str, Any]


def match_pod_failure_policy(policy: Obj | None, pod: Obj) -> tuple[str | None, str | None]:
    """(action, message) of the first `podFailurePolicy` rule a failed pod matches; (None, None) if none.

    As Kubernetes' matchPodFailurePolicy: `onExitCodes` looks at terminated containers (then init
    containers) with a non-zero exit code, optionally of one `containerName`; `onPodConditions` at
    the pod's conditions. The message is Kubernetes' wording, for a FailJob rule's Failed condition.
    """
    status = pod.get("status") or {}
    ns, name = meta(pod).get("namespace"), meta(pod).get("name")
    for index, rule in enumerate((policy or {}).get("rules") or []):
        action = str(rule.get("action") or "")
        exits = rule.get("onExitCodes")
        if exits is not None:
            values = {int(v) for v in exits.get("values") or []}
            for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
                if exits.get("containerName") and exits["containerName"] != cs.get("name"):
                    continue
                code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
                if code is None or int(code) == 0:
                    continue
                if (int(code) in values) == (exits.get("operator") == "In"):
                    return action, (
                        f"Container {cs.get('name')} for pod {ns}/{name} failed with exit code {code} "
                        f"matching {action} rule at index {index}"
                    )
        for pattern in rule.get("onPodConditions") or []:
            for cond in status.get("conditions") or []:
                if cond.get("type") == pattern.get("type") and cond.get("status") == pattern.get("status", "True"):
                    return (
                        action,
                        f"Pod {ns}/{name} has condition {cond.get('type')} matching {action} rule at index {index}",
                    )
    return None, None
