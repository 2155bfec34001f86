"""A small kopf operator for the kopf end-to-end tests, written as any kopf user would write it.

It serves the `Gadget` kind (group `kopfdemo.skiff.dev`, see `GADGET_CRD`) and has one handler
of each sort kopf offers, each leaving a trace a user can see: handler results in `.status`
(kopf's status patches), Kubernetes events through `kopf.info`, lines in the operator's log.
Its watch of gadgets is filtered by the server on a custom field (the CRD's `selectableFields`).
Run it unchanged with `kopf run --standalone --namespace NS kopf_demo.py` and KUBECONFIG set.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

GROUP = "kopfdemo.skiff.dev"
GADGETS = (GROUP, "v1", "gadgets")
log = logging.getLogger("kopf_demo")

GADGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"gadgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "selectableFields": [{"jsonPath": ".spec.color"}],
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "size": {"type": "integer"},
                    "color": {"type": "string"},
                    "flaky": {"type": "integer", "description": "How often the flaky handler fails first."},
                }},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            }}},
        }],
    },
}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.INFO  # kopf.info() events, not every debug line
    # the server filters the watch: gadgets coloured "ignored" never reach this operator
    settings.watching.field_selectors[GROUP, "gadgets"] = "spec.color!=ignored"
    settings.watching.connect_timeout = 5
    settings.networking.error_backoffs = [0.5, 1, 2]


@kopf.on.create(*GADGETS)
def created(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[str, Any]:
    kopf.info(body, reason="Created", message=f"gadget of size {spec.get('size')}")
    return {"size": spec.get("size")}


@kopf.on.resume(*GADGETS)
def resumed(**_: Any) -> dict[str, Any]:
    return {"resumed": True}


@kopf.on.update(*GADGETS, field="spec.size")
def resized(old: Any, new: Any, **_: Any) -> dict[str, Any]:
    return {"from": old, "to": new}


@kopf.on.field(*GADGETS, field="spec.color")
def recolored(old: Any, new: Any, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    kopf.info(body, reason="Recolored", message=f"{old} -> {new}")
    patch.status["color"] = new


@kopf.on.create(*GADGETS, when=lambda spec, **_: bool(spec.get("flaky")))
def flaky(retry: int, spec: kopf.Spec, body: kopf.Body, **_: Any) -> dict[str, Any]:
    if retry < spec["flaky"]:
        kopf.warn(body, reason="NotReady", message=f"attempt {retry + 1} fails on purpose")
        raise kopf.TemporaryError(f"not ready yet (retry {retry})", delay=1)
    return {"attempts": retry + 1}


@kopf.on.create(*GADGETS, labels={"tier": "gold"})
def gold(**_: Any) -> str:
    return "gold"


@kopf.index(*GADGETS)
def by_color(name: str, spec: kopf.Spec, **_: Any) -> dict[str, str]:
    return {spec.get("color", "none"): name}


@kopf.on.create(*GADGETS, labels={"census": kopf.PRESENT})
def census(spec: kopf.Spec, by_color: kopf.Index[str, str], **_: Any) -> list[str]:
    return sorted(by_color.get(spec.get("color", "none"), []))


@kopf.on.delete(*GADGETS)
def deleted(body: kopf.Body, **_: Any) -> None:
    kopf.info(body, reason="CleanedUp", message="delete handler ran")


@kopf.timer(*GADGETS, interval=0.5, labels={"timer": "on"})
def ticking(name: str, namespace: str, status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    log.info("tick %s/%s", namespace, name)
    patch.status["ticks"] = int(status.get("ticks") or 0) + 1


@kopf.daemon(*GADGETS, labels={"daemon": "on"}, cancellation_backoff=5)
async def watching(stopped: kopf.DaemonStopped, name: str, namespace: str, body: kopf.Body, **_: Any) -> None:
    kopf.info(body, reason="DaemonStarted", message="daemon running")
    while not stopped:
        log.info("daemon alive %s/%s", namespace, name)
        await stopped.wait(0.3)
    log.info("daemon stopped %s/%s", namespace, name)
    kopf.info(body, reason="DaemonStopped", message=f"daemon stopped: {stopped.reason}")
