"""Probe results as the kubelet keeps them: defaults, thresholds, hold, started/ready, where httpGet goes.

Also the HTTP and TCP actions against real local sockets (a tiny asyncio server), the gRPC health
check against a real etcd, and the pod status computed with probe states.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from skiff.apiserver.pki import ensure_pki
from skiff.node.agent import actions, hooks
from skiff.node.agent.podstatus import RUNNING, Attempt, Observation, compute_status
from skiff.node.agent.prober import ProbeManager
from skiff.node.agent.probes import (
    LIVENESS,
    READINESS,
    STARTUP,
    ActionError,
    ProbeSpec,
    Result,
    Tracker,
    container_probe_state,
    http_target,
    pod_ref,
    probe_specs,
    resolve_port,
)
from tests.storage.conftest import start_etcd

S, F, U = Result.SUCCESS, Result.FAILURE, Result.UNKNOWN


def test_probe_specs_have_kubernetes_defaults_and_minimums() -> None:
    c = {"name": "c", "livenessProbe": {"exec": {"command": ["true"]}},
         "readinessProbe": {"httpGet": {"port": 80}, "periodSeconds": 0, "timeoutSeconds": 5, "successThreshold": 2,
                            "initialDelaySeconds": 3},
         "startupProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 30,
                          "terminationGracePeriodSeconds": 4}}  # fmt: skip
    specs = {s.kind: s for s in probe_specs(c)}
    assert [s.kind for s in probe_specs(c)] == [STARTUP, LIVENESS, READINESS]
    live = specs[LIVENESS]
    assert (live.period, live.timeout, live.success_threshold, live.failure_threshold, live.initial_delay) == (
        10.0, 1.0, 1, 3, 0.0)  # fmt: skip
    assert live.action == {"exec": {"command": ["true"]}} and live.label == "Liveness"
    ready = specs[READINESS]
    assert (ready.period, ready.timeout, ready.success_threshold, ready.initial_delay) == (1.0, 5.0, 2, 3.0)
    assert specs[STARTUP].failure_threshold == 30 and specs[STARTUP].termination_grace == 4
    assert probe_specs({"name": "plain"}) == []


@pytest.mark.parametrize(
    ("kind", "thresholds", "outcomes", "results"),
    [
        (LIVENESS, (1, 3), [F, F, F, S], [S, S, F, F]),  # third failure in a row; then on hold
        (LIVENESS, (1, 3), [F, F, S, F, F], [S, S, S, S, S]),  # a success breaks the run
        (READINESS, (1, 3), [S, F, F, F, S], [S, S, S, F, S]),  # starts as Failure, one success makes it ready
        (READINESS, (2, 1), [S, S, F, S, S], [F, S, F, F, S]),  # successThreshold 2
        (STARTUP, (1, 2), [F, S], [U, S]),  # Unknown until decided
        (STARTUP, (1, 2), [F, U, F], [U, U, F]),  # an error is thrown away (does not break the run)
    ],
    ids=["liveness-3-failures", "liveness-run-broken", "readiness", "readiness-success-2", "startup", "startup-error"],
)
def test_tracker_thresholds(kind: str, thresholds: tuple[int, int], outcomes: list[Result],
                            results: list[Result]) -> None:  # fmt: skip
    t = Tracker(ProbeSpec(kind=kind, success_threshold=thresholds[0], failure_threshold=thresholds[1]))
    seen = []
    for outcome in outcomes:
        t.observe(outcome)
        seen.append(t.result)
    assert seen == results


def test_liveness_failure_holds_the_worker_and_reports_one_change() -> None:
    t = Tracker(ProbeSpec(kind=LIVENESS, failure_threshold=1))
    assert t.observe(F) is True and t.on_hold
    assert t.observe(S) is False and t.result == F  # held until the container is replaced


def test_readiness_failure_does_not_hold() -> None:
    t = Tracker(ProbeSpec(kind=READINESS, failure_threshold=1), initial=S)
    assert t.observe(F) and not t.on_hold and t.observe(S) and t.result == S


@pytest.mark.parametrize(
    ("running", "results", "has", "expected"),
    [
        (True, {}, {}, (True, True)),
        (False, {READINESS: S}, None, (False, False)),
        (True, {READINESS: F}, None, (True, False)),
        (True, {READINESS: S}, None, (True, True)),
        (True, {STARTUP: U, READINESS: S}, None, (False, False)),  # readiness waits for startup
        (True, {STARTUP: S, LIVENESS: S}, None, (True, True)),
        (True, {}, {READINESS: True}, (True, False)),  # a readiness worker without a result yet
    ],
    ids=["no-probes", "not-running", "unready", "ready", "not-started", "started", "readiness-pending"],
)
def test_container_probe_state(running: bool, results: dict[str, Result], has: dict[str, bool] | None,
                               expected: tuple[bool, bool]) -> None:  # fmt: skip
    assert container_probe_state(running, results, has) == expected


def test_ports_by_number_and_name() -> None:
    c = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}
    assert resolve_port(81, c) == 81 and resolve_port("82", c) == 82 and resolve_port("http", c) == 8080
    with pytest.raises(ActionError, match="couldn't find port: metrics"):
        resolve_port("metrics", c)
    with pytest.raises(ActionError, match="invalid port number: 70000"):
        resolve_port(70000, c)


def test_http_target_defaults_to_the_pod_ip_and_keeps_given_headers() -> None:
    c = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}
    t = http_target({"port": "http", "path": "healthz", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, c,
                    "10.1.2.3")  # fmt: skip
    assert t.url == "http://10.1.2.3:8080/healthz"
    assert dict(t.headers) == {"User-Agent": t.headers[0][1], "Accept": "*/*", "X-Probe": "1"}
    assert t.headers[0][1].startswith("kube-probe/1.")
    mine = http_target({"port": 443, "scheme": "HTTPS", "host": "example.test",
                        "httpHeaders": [{"name": "user-agent", "value": "me"}]}, c, "10.1.2.3")  # fmt: skip
    assert mine.url == "https://example.test:443/" and dict(mine.headers) == {"Accept": "*/*", "user-agent": "me"}


def test_pod_ref_is_the_kubelets_format() -> None:
    assert pod_ref({"metadata": {"name": "web", "namespace": "ns", "uid": "u-1"}}) == "web_ns(u-1)"


def test_pod_status_uses_probe_states() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
           "spec": {"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]}}  # fmt: skip
    attempts = [Attempt(id="ca", name="a", attempt=0, state=RUNNING, started_at=1.0),
                Attempt(id="cb", name="b", attempt=0, state=RUNNING, started_at=1.0)]  # fmt: skip
    obs = Observation(attempts=attempts, sandbox_ready=True, pod_ip="10.0.0.2", probes={"ca": (True, False)})
    status = compute_status(pod, obs, now="2026-01-01T00:00:00Z")
    a, b = status["containerStatuses"]
    assert (a["started"], a["ready"], b["started"], b["ready"]) == (True, False, True, True)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["ContainersReady"]["status"] == "False"
    assert conds["Ready"]["message"] == "containers with unready status: [a]"
    assert status["phase"] == "Running"


# --- the actions, against real local sockets ------------------------------------------------------


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """Answers /ok 200, /moved a redirect to /ok, /away a redirect to another host, others 503."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        path = head.split()[1]
        if path == b"/ok":
            reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        elif path == b"/moved":
            reply = b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n"
        elif path == b"/away":
            reply = b"HTTP/1.1 301 Moved\r\nLocation: http://elsewhere.test/\r\nContent-Length: 4\r\n\r\ngone"
        else:
            reply = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port, seen
    server.close()
    await server.wait_closed()


async def test_http_get_outcomes(http_server: tuple[int, list[bytes]]) -> None:
    port, seen = http_server

    def target(path: str) -> actions.HttpTarget:
        return http_target({"port": port, "path": path, "httpHeaders": [{"name": "Host", "value": "probe.test"}]},
                           {}, "127.0.0.1")  # fmt: skip

    ok = await actions.http_get(target("/ok"), 1.0)
    assert ok.result == S and ok.output == "ok" and not ok.warning
    assert b"Host: probe.test\r\n" in seen[0] and b"User-Agent: kube-probe/1." in seen[0]
    moved = await actions.http_get(target("/moved"), 1.0)
    assert moved.result == S and moved.output == "ok"
    away = await actions.http_get(target("/away"), 1.0)
    assert away.result == S and away.warning and away.output == "Probe terminated redirects, Response body: gone"
    bad = await actions.http_get(target("/down"), 1.0)
    assert bad.result == F and bad.output == "HTTP probe failed with statuscode: 503"


async def test_http_and_tcp_to_a_closed_port_fail_with_go_like_messages() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    refused = await actions.http_get(http_target({"port": port}, {}, "127.0.0.1"), 1.0)
    assert refused.result == F
    assert refused.output == f'Get "http://127.0.0.1:{port}/": dial tcp 127.0.0.1:{port}: connect: connection refused'
    tcp = await actions.tcp_connect("127.0.0.1", port, 1.0)
    assert tcp.result == F and tcp.output == f"dial tcp 127.0.0.1:{port}: connect: connection refused"


async def test_tcp_connect_succeeds_on_a_listening_port() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    try:
        assert (await actions.tcp_connect("127.0.0.1", server.sockets[0].getsockname()[1], 1.0)).result == S
    finally:
        server.close()
        await server.wait_closed()


def test_health_status_of_a_grpc_message() -> None:
    serving, not_serving = b"\x00\x00\x00\x00\x02\x08\x01", b"\x00\x00\x00\x00\x02\x08\x02"
    assert actions.health_status(serving) == 1 and actions.health_status(not_serving) == 2
    assert actions.health_status(b"\x00\x00\x00\x00\x00") == 0  # UNKNOWN: the field's default
    assert actions.health_status(b"\x01\x00\x00\x00\x02\x08\x01") is None  # compressed: not ours


@pytest.mark.etcd
async def test_grpc_health_against_etcd(tmp_path: Path) -> None:
    """etcd serves grpc.health.v1 on its client port (Kubernetes' own example of a gRPC probe)."""
    proc, url = await asyncio.to_thread(start_etcd, str(tmp_path / "etcd"))
    try:
        port = int(url.rsplit(":", 1)[1])
        ok = await actions.grpc_health("127.0.0.1", port, "", 5.0)
        assert (ok.result, ok.output) == (S, "service healthy")
        unknown = await actions.grpc_health("127.0.0.1", port, "no.such.Service", 5.0)
        assert unknown.result == F and unknown.output.startswith("error: health rpc probe failed: ")
    finally:
        proc.kill()
        proc.wait()
    refused = await actions.grpc_health("127.0.0.1", port, "", 1.0)
    assert refused.output == (f'timeout: failed to connect service "127.0.0.1:{port}" within 1s: '
                              f"dial tcp 127.0.0.1:{port}: connect: connection refused")  # fmt: skip


class _Events:
    """Records what the prober would write as Events."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    async def record(self, involved: object, *, type: str, reason: str, message: str, field_path: str = "") -> None:
        self.seen.append((reason, message, field_path))


async def test_prober_workers_follow_running_containers_and_end_with_the_pod() -> None:
    """A tcpSocket readiness probe on a listening port and a liveness probe on a closed one (no runtime needed)."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    open_port = server.sockets[0].getsockname()[1]
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    liveness = {"tcpSocket": {"port": closed_port}, "periodSeconds": 1, "failureThreshold": 1}
    container = {"name": "c", "readinessProbe": {"tcpSocket": {"port": open_port}, "periodSeconds": 1},
                 "livenessProbe": liveness}  # fmt: skip
    pod = {"metadata": {"uid": "u1", "name": "p", "namespace": "ns"}, "spec": {"containers": [container]}}
    events = _Events()
    changed: list[str] = []
    manager = ProbeManager(None, events, on_change=changed.append)  # type: ignore[arg-type]
    first = Attempt(id="c1", name="c", attempt=0, state=RUNNING, started_at=0.0)
    try:
        manager.sync(pod, "127.0.0.1", [first])
        assert manager.states([first]) == {"c1": (True, False)}  # readiness starts as Failure
        for _ in range(100):
            if manager.failed("c1") and manager.states([first])["c1"] == (True, True):
                break
            await asyncio.sleep(0.05)
        assert manager.failed("c1") is not None and manager.failed("c1").kind == LIVENESS  # type: ignore[union-attr]
        assert manager.states([first]) == {"c1": (True, True)} and changed.count("u1") >= 2
        reason, message, path = events.seen[0]
        assert (reason, path) == ("Unhealthy", "spec.containers{c}")
        assert message == f"Liveness probe failed: dial tcp 127.0.0.1:{closed_port}: connect: connection refused"

        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("prober ")]
        second = Attempt(id="c2", name="c", attempt=1, state=RUNNING, started_at=0.0)
        manager.sync(pod, "127.0.0.1", [Attempt(id="c1", name="c", attempt=0, state="exited"), second])
        await asyncio.sleep(0)
        assert all(t.done() for t in tasks) and manager.failed("c1") is None
        assert manager.states([second]) == {"c2": (True, False)}  # a new container starts over
        await manager.forget("u1")
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("prober ")]
    finally:
        await manager.stop()
        server.close()
        await server.wait_closed()


async def test_https_probe_does_not_verify_the_certificate(tmp_path: Path) -> None:
    """As the kubelet's: a scheme HTTPS probe accepts a certificate from a CA the node does not know."""
    paths = await asyncio.to_thread(ensure_pki, tmp_path / "pki", server_url="https://127.0.0.1:6443")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(paths.serving_cert, paths.serving_key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        port = server.sockets[0].getsockname()[1]
        out = await actions.http_get(http_target({"port": port, "scheme": "HTTPS"}, {}, "127.0.0.1"), 5.0)
        assert out.result == S
        plain = await actions.http_get(http_target({"port": port}, {}, "127.0.0.1"), 5.0)
        assert plain.result == F
    finally:
        server.close()
        await server.wait_closed()


async def test_lifecycle_handlers_sleep_and_refuse_what_they_do_not_know() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}}
    container = {"name": "c"}
    sleep = await hooks.run_handler(None, pod, container, "cid", {"sleep": {"seconds": 0}}, "")  # type: ignore[arg-type]
    assert sleep is None
    unknown = await hooks.run_handler(None, pod, container, "cid", {"tcpSocket": {"port": 1}}, "")  # type: ignore[arg-type]
    assert unknown is not None and unknown.startswith("Cannot run handler: Invalid handler")
    handler = {"httpGet": {"port": "web", "path": "/x"}}
    refused = await hooks.run_handler(None, pod, container, "cid", handler, "10.0.0.1")  # type: ignore[arg-type]
    assert refused == ('HTTP lifecycle hook (/x) for Container "c" in Pod "p_ns(u)" failed - error: '
                       "couldn't find port: web in container c")  # fmt: skip
