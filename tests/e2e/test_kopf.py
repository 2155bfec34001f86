"""kopf operators run against skiff unchanged: only a kubeconfig, no flags or patches for skiff.

The operator is tests/e2e/operators/kopf_demo.py, started with `kopf run` as a subprocess
with KUBECONFIG pointing at the server's admin kubeconfig, as a user would start it. The tests
drive it with kubectl and look at what a user sees: the custom objects' status (kopf's status
patches), their finalizers, `kubectl get events` and `kubectl describe`, kopf's peering
objects and the operator's log. The module has a server of its own: kopf's peering CRDs are
cluster-wide, and the last test restarts the server under the running operator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Server
from tests.e2e.operators.kopf_demo import GADGET_CRD, GROUP

pytestmark = pytest.mark.e2e

OPERATORS = Path(__file__).parent / "operators"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
NS = "kopf-demo"


def eventually(check: Callable[[], Any], what: str, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass
class Operator:
    """One `kopf run` process and its log."""

    server: Server
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        env = {**os.environ, "KUBECONFIG": str(self.server.kubeconfig)}
        cmd = [sys.executable, "-m", "kopf", "run", *self.args, str(OPERATORS / "kopf_demo.py")]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.log_path.parent)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def kopf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("skiff-kopf")).start()
    srv.kubectl("apply", "-f", "-", input=json.dumps(GADGET_CRD))
    srv.kubectl("wait", "--for=condition=Established", f"crd/{GADGET_CRD['metadata']['name']}", "--timeout=60s")
    srv.kubectl("create", "namespace", NS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def operator(kopf_server: Server) -> Iterator[Operator]:
    """The demo operator, standalone (no peering CRDs exist yet), watching namespace NS."""
    op = Operator(kopf_server, ["--standalone", "--namespace", NS], kopf_server.data_dir / "kopf-standalone.log")
    op.start()
    yield op
    op.stop()


def manifest(name: str, labels: dict[str, str] | None = None, **spec: Any) -> str:
    return json.dumps({
        "apiVersion": f"{GROUP}/v1", "kind": "Gadget",
        "metadata": {"name": name, "labels": labels or {}}, "spec": spec,
    })


def create(server: Server, name: str, labels: dict[str, str] | None = None, ns: str = NS, **spec: Any) -> None:
    server.kubectl("create", "-n", ns, "-f", "-", input=manifest(name, labels, **spec))


def get(server: Server, name: str, ns: str = NS) -> dict[str, Any] | None:
    code, body, _ = server.raw("GET", f"/apis/{GROUP}/v1/namespaces/{ns}/gadgets/{name}")
    if code == 404:
        return None
    assert code == 200, body
    return dict(body)


def status_of(server: Server, name: str, key: str, ns: str = NS, within: float = 60.0) -> Any:
    """`.status[key]` of a gadget once kopf has written it."""
    def check() -> Any:
        obj = get(server, name, ns)
        return ((obj or {}).get("status") or {}).get(key)
    return eventually(check, f"status.{key} of gadget {ns}/{name}", within)


def events_of(server: Server, name: str, ns: str = NS) -> list[dict[str, Any]]:
    """The events of a gadget, found as kubectl describe finds them (field selectors on involvedObject)."""
    out = server.kubectl("get", "events", "-n", ns, "-o", "json",
                         "--field-selector", f"involvedObject.kind=Gadget,involvedObject.name={name}").stdout
    return list(json.loads(out)["items"])


def event_reasons(server: Server, name: str, ns: str = NS) -> list[str]:
    return [e["reason"] for e in events_of(server, name, ns)]


def messages(server: Server, name: str, reason: str, ns: str = NS) -> list[str]:
    """The messages of a gadget's events with `reason`."""
    return [e["message"] for e in events_of(server, name, ns) if e["reason"] == reason]


def test_create_handler_result_finalizer_and_events(kopf_server: Server, operator: Operator) -> None:
    create(kopf_server, "alpha", size=2, color="red")
    assert status_of(kopf_server, "alpha", "created") == {"size": 2}
    assert status_of(kopf_server, "alpha", "color") == "red"  # on.field sees the field appear
    obj = get(kopf_server, "alpha")
    assert obj is not None
    assert FINALIZER in obj["metadata"]["finalizers"]

    eventually(lambda: {"Created", "Recolored"} <= set(event_reasons(kopf_server, "alpha")), "kopf's events")
    created = next(e for e in events_of(kopf_server, "alpha") if e["reason"] == "Created")
    assert created["type"] == "Normal"
    assert created["message"] == "gadget of size 2"
    involved = created["involvedObject"]
    assert (involved["apiVersion"], involved["kind"], involved["namespace"], involved["name"], involved["uid"]) == (
        f"{GROUP}/v1", "Gadget", NS, "alpha", obj["metadata"]["uid"])
    described = kopf_server.kubectl("describe", "gadget", "alpha", "-n", NS).stdout
    assert re.search(r"Normal\s+Created\s+.*kopf\s+gadget of size 2", described), described


def test_update_and_field_handlers(kopf_server: Server, operator: Operator) -> None:
    create(kopf_server, "beta", size=1, color="red")
    status_of(kopf_server, "beta", "created")
    kopf_server.kubectl("patch", "gadget", "beta", "-n", NS, "--type=merge", "-p", '{"spec": {"size": 4}}')
    assert status_of(kopf_server, "beta", "resized/spec.size") == {"from": 1, "to": 4}

    kopf_server.kubectl("patch", "gadget", "beta", "-n", NS, "--type=merge", "-p", '{"spec": {"color": "blue"}}')
    eventually(lambda: status_of(kopf_server, "beta", "color") == "blue", "status.color blue")
    eventually(lambda: "red -> blue" in messages(kopf_server, "beta", "Recolored"), "the Recolored event")
    # the size handler is filtered on spec.size: a colour change did not run it again
    assert status_of(kopf_server, "beta", "resized/spec.size") == {"from": 1, "to": 4}


def test_temporary_error_is_retried_until_it_succeeds(kopf_server: Server, operator: Operator) -> None:
    create(kopf_server, "flaky", size=1, flaky=2)
    assert status_of(kopf_server, "flaky", "flaky") == {"attempts": 3}
    # events are posted in the background: both warnings arrive, each of type Warning
    eventually(lambda: len(messages(kopf_server, "flaky", "NotReady")) == 2, "two NotReady events")
    warnings = [e for e in events_of(kopf_server, "flaky") if e["reason"] == "NotReady"]
    assert {e["type"] for e in warnings} == {"Warning"}
    assert "Handler 'flaky' failed temporarily: not ready yet (retry 1)" in operator.logs()
    obj = get(kopf_server, "flaky")
    assert obj is not None
    # kopf's progress annotations are gone once every handler has succeeded
    assert not [a for a in obj["metadata"].get("annotations", {}) if a.startswith("kopf.zalando.org/flaky")]


def test_label_filtered_handler_and_index(kopf_server: Server, operator: Operator) -> None:
    create(kopf_server, "plain", size=1, color="violet")
    create(kopf_server, "golden", {"tier": "gold", "census": "yes"}, size=1, color="violet")
    assert status_of(kopf_server, "golden", "gold") == "gold"
    # the index of gadgets by colour holds both violet ones when the census handler runs
    assert status_of(kopf_server, "golden", "census") == ["golden", "plain"]
    status_of(kopf_server, "plain", "created")
    obj = get(kopf_server, "plain")
    assert obj is not None
    assert "gold" not in obj["status"] and "census" not in obj["status"]


def test_delete_runs_the_delete_handler_then_the_object_is_gone(kopf_server: Server, operator: Operator) -> None:
    create(kopf_server, "doomed", size=1)
    status_of(kopf_server, "doomed", "created")
    obj = get(kopf_server, "doomed")
    assert obj is not None
    uid = obj["metadata"]["uid"]
    kopf_server.kubectl("delete", "gadget", "doomed", "-n", NS, "--timeout=60s")
    assert get(kopf_server, "doomed") is None
    eventually(lambda: messages(kopf_server, "doomed", "CleanedUp"), "the delete handler's event")
    cleaned = [e for e in events_of(kopf_server, "doomed") if e["reason"] == "CleanedUp"]
    assert [e["involvedObject"]["uid"] for e in cleaned] == [uid]
    done = f"[{NS}/doomed] Deletion is processed: 1 succeeded; 0 failed."
    eventually(lambda: done in operator.logs(), "the operator's log of the deletion")


def ticks(operator: Operator, name: str) -> int:
    return operator.logs().count(f"tick {NS}/{name}\n")


def test_timer_and_daemon_run_and_stop_when_the_object_goes(kopf_server: Server, operator: Operator) -> None:
    create(kopf_server, "clock", {"timer": "on"}, size=1)
    create(kopf_server, "busy", {"timer": "on", "daemon": "on"}, size=1)
    eventually(lambda: (status_of(kopf_server, "busy", "ticks") or 0) >= 3, "three timer ticks in status")
    eventually(lambda: "DaemonStarted" in event_reasons(kopf_server, "busy"), "the daemon's start event")
    assert f"daemon alive {NS}/busy" in operator.logs()

    kopf_server.kubectl("delete", "gadget", "busy", "-n", NS, "--timeout=60s")
    stopped = eventually(lambda: messages(kopf_server, "busy", "DaemonStopped"), "the daemon's stop event")
    assert "deleted" in stopped[0].lower(), stopped  # stopped gracefully, for the deletion
    assert f"daemon stopped {NS}/busy" in operator.logs()

    # the timer of the deleted object stops too: the other object's timer keeps ticking meanwhile
    after_delete = ticks(operator, "busy")
    clock = ticks(operator, "clock")
    eventually(lambda: ticks(operator, "clock") >= clock + 4, "four more ticks of the other timer")
    assert ticks(operator, "busy") <= after_delete + 1  # at most one tick already under way
    kopf_server.kubectl("delete", "gadget", "clock", "-n", NS, "--timeout=60s")


def test_the_server_filters_the_operators_watch_on_a_selectable_field(kopf_server: Server, operator: Operator) -> None:
    """The demo CRD makes `.spec.color` selectable; the operator watches `spec.color!=ignored`."""
    create(kopf_server, "unseen", size=1, color="ignored")
    create(kopf_server, "seen", size=1, color="teal")
    status_of(kopf_server, "seen", "created")  # one watch stream, in order: "unseen" came first
    unseen = get(kopf_server, "unseen")
    assert unseen is not None
    assert "status" not in unseen and FINALIZER not in unseen["metadata"].get("finalizers", [])
    assert "[kopf-demo/unseen]" not in operator.logs()
    listed = kopf_server.kubectl("get", "gadgets", "-n", NS, "--field-selector", "spec.color=ignored",
                                 "-o", "name").stdout.split()
    assert listed == [f"gadget.{GROUP}/unseen"]

    # recoloured, it enters the filtered watch and is handled like a new object
    kopf_server.kubectl("patch", "gadget", "unseen", "-n", NS, "--type=merge", "-p", '{"spec": {"color": "red"}}')
    assert status_of(kopf_server, "unseen", "created") == {"size": 1}

    bad = kopf_server.kubectl("get", "gadgets", "-n", NS, "--field-selector", "spec.size=1", check=False)
    assert bad.returncode != 0 and "field label not supported: spec.size" in bad.stderr


def test_selectable_fields_are_checked_against_the_schema(kopf_server: Server) -> None:
    crd = json.loads(json.dumps(GADGET_CRD))
    crd["metadata"]["name"] = f"badgadgets.{GROUP}"
    crd["spec"]["names"] = {"plural": "badgadgets", "singular": "badgadget", "kind": "BadGadget"}
    crd["spec"]["versions"][0]["selectableFields"] = [
        {"jsonPath": ".spec.nothing"}, {"jsonPath": ".status"}, {"jsonPath": ".spec.size"}, {"jsonPath": ".spec.size"},
    ]
    out = kopf_server.kubectl("create", "-f", "-", input=json.dumps(crd), check=False)
    assert out.returncode != 0
    fields = "spec.versions[0].selectableFields"
    for message in (
        f'{fields}[0].jsonPath: Invalid value: ".spec.nothing": is an invalid path: does not refer to a valid field',
        f'{fields}[1].jsonPath: Invalid value: ".status": must point to a field of type string, boolean or integer',
        f'{fields}[3].jsonPath: Duplicate value: ".spec.size"',
    ):
        assert message in out.stderr, out.stderr
    code, body, _ = kopf_server.raw("GET", f"/openapi/v3/apis/{GROUP}/v1")
    assert code == 200
    schema = body["components"]["schemas"]["dev.skiff.kopfdemo.v1.Gadget"]
    assert schema["x-kubernetes-selectable-fields"] == [{"fieldPath": "spec.color"}]


def test_peering_pauses_the_lower_priority_operator_until_the_other_goes(kopf_server: Server, tmp_path: Path) -> None:
    ns = "kopf-peers"
    kopf_server.kubectl("create", "namespace", ns)
    kopf_server.kubectl("apply", "-f", str(OPERATORS / "kopf_peering.yaml"))
    for crd in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        kopf_server.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    kopf_server.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "demo"}}))
    low = Operator(kopf_server, ["--peering", "demo", "--priority", "10", "--namespace", ns], tmp_path / "low.log")
    high = Operator(kopf_server, ["--peering", "demo", "--priority", "20", "--namespace", ns], tmp_path / "high.log")
    try:
        low.start()
        high.start()

        def priorities() -> list[int]:
            out = kopf_server.kubectl("get", "kopfpeering", "demo", "-n", ns, "-o", "json").stdout
            return sorted(p["priority"] for p in (json.loads(out).get("status") or {}).values())

        eventually(lambda: priorities() == [10, 20], "both operators in the peering object's status")
        create(kopf_server, "shared", ns=ns, size=1)
        assert status_of(kopf_server, "shared", "created", ns) == {"size": 1}
        eventually(lambda: f"[{ns}/shared] Creation is processed" in high.logs(), "the high-priority operator")
        assert f"[{ns}/shared]" not in low.logs()

        high.stop()  # a stopping operator removes itself from the peering object
        eventually(lambda: "Resuming operations after the pause" in low.logs(), "the low-priority one resuming")
        assert priorities() == [10]
        # what the other operator had handled, the one taking over finds at its start: on.resume runs
        assert status_of(kopf_server, "shared", "resumed", ns) == {"resumed": True}
        create(kopf_server, "taken-over", ns=ns, size=3)
        assert status_of(kopf_server, "taken-over", "created", ns) == {"size": 3}
        assert f"[{ns}/taken-over] Creation is processed" in low.logs()
    finally:
        high.stop()
        low.stop()
    kopf_server.kubectl("delete", "namespace", ns, "--wait=false")


def test_operator_log_has_no_errors_but_the_expected(operator: Operator) -> None:
    unexpected = [line for line in operator.logs().splitlines()
                  if re.search(r"\[(WARNING|ERROR|CRITICAL) *\]|Traceback", line) and "failed temporarily" not in line]
    assert not unexpected, "\n".join(unexpected)


def test_watch_reconnects_after_a_server_restart(kopf_server: Server, operator: Operator) -> None:
    create(kopf_server, "before", size=1)
    status_of(kopf_server, "before", "created")
    kopf_server.stop()
    kopf_server.start()  # same data dir, same port: the operator's kubeconfig still holds
    create(kopf_server, "after", size=7)
    assert status_of(kopf_server, "after", "created", within=60) == {"size": 7}
