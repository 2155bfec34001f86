"""Serverless functions end to end: `skiff fn` deploys a handler file, `skiff gateway` runs it on a real
agent and runc, scales it from and to zero, and bills every call.

The gateway runs as its own process (as `skiff gateway` alone) on a free port, binding instances to
the test node; the python runtime image is built into the test registry once.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agent_node import AgentNode, NodeSetup, Registry, missing_requirements, node_fixtures, wait_for
from tests.e2e.cluster import BIN, Server
from tests.e2e.history import Recording
from tests.ports import free_port

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))
NODE = "e2e-functions"
POD_CIDR = "10.199.48.0/24"
POD_GATEWAY = "10.199.48.1"  # the node's address on its pod bridge

HELLO = """
def handle(event, context):
    return {"hello": (event or {}).get("name", "world"), "function": context.function_name}
"""
BOOM = """
def handle(event, context):
    raise ValueError("kaboom " + str(event))
"""
BAD = """
def handle(event, context)
    return 1
"""


@dataclass
class Gateway:
    server: Server
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()  # more `skiff gateway` flags

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir.parent / "gateway.log").open("ab")
        # on every address, so that pods reach it at the node's bridge address (told to instances as $SKIFF_GATEWAY)
        cmd = [str(BIN / "skiff"), "gateway", "--kubeconfig", str(self.server.kubeconfig), "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--node-name", NODE, "--log-level", "debug", "--bind-address",
               "0.0.0.0", "--advertise-url", f"http://{POD_GATEWAY}:{self.port}", *self.extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._up, timeout=60, what="the gateway answering /healthz")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"skiff gateway exited:\n{self.logs()}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def logs(self) -> str:
        return (self.data_dir.parent / "gateway.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def fn_env(gw: Gateway) -> dict[str, str]:
    env = {**os.environ, "KUBECONFIG": str(gw.server.kubeconfig), "SKIFF_GATEWAY": gw.url}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def skiff(gw: Gateway, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(BIN / "skiff"), "fn", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=fn_env(gw))
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def post(url: str, body: bytes, token: str = "") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=90) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


registry, cluster, agent = node_fixtures(NodeSetup(name="fn", node=NODE, pod_cidr=POD_CIDR, images=("python",)))


@pytest.fixture(scope="module")
def gateway(agent: AgentNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(agent.server, tmp_path_factory.mktemp("fn-gateway") / "data", free_port()).start()
    try:
        yield gw
    finally:
        gw.stop()


def fn_pods(cluster: Server, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-l", f"functions.skiff.dev/function={name}", "-o", "json")
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def function(cluster: Server, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(cluster.kubectl("get", "function", name, "-o", "json").stdout)
    return obj


def test_deploy_invoke_scale_to_zero_and_back(gateway: Gateway, tmp_path: Path) -> None:
    cluster = gateway.server
    src = tmp_path / "hello.py"
    src.write_text(HELLO)
    # idle timeout 4 s: the three calls below (each a process or a request) must come within it of each
    # other on a loaded machine, or a third cold start would be counted
    out = skiff(gateway, "deploy", str(src), "--name", "hello", "--idle-timeout", "4")
    assert "function.functions.skiff.dev/hello created" in out.stdout
    assert fn_pods(cluster, "hello") == []  # nothing runs until called

    # the first call is held while an instance starts, then answered: no error, no retry
    out = skiff(gateway, "invoke", "hello", "--data", '{"name": "skiff"}')
    assert json.loads(out.stdout) == {"hello": "skiff", "function": "hello"}
    status, body = post(f"{gateway.url}/fn/default/hello", b'{"name": "http"}')
    assert (status, json.loads(body)["hello"]) == (200, "http")
    req = urllib.request.Request(
        f"{gateway.url}/anything", data=b"{}", headers={"Host": "hello.default.fn.skiff.local"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read())["hello"] == "world"

    printed = cluster.kubectl("get", "functions").stdout
    assert printed.split("\n")[0].split() == ["NAME", "READY", "REPLICAS", "INVOCATIONS", "AGE"]

    # idle for longer than the idle timeout: the instance is stopped
    wait_for(lambda: fn_pods(cluster, "hello") == [], timeout=60, what="scale to zero")
    wait_for(lambda: function(cluster, "hello").get("status", {}).get("replicas") == 0, timeout=60,
             what="status replicas 0")  # fmt: skip
    # and the next call still succeeds: a cold start
    status, body = post(f"{gateway.url}/fn/default/hello", b'{"name": "again"}')
    assert (status, json.loads(body)["hello"]) == (200, "again")

    ls = skiff(gateway, "ls").stdout
    assert ls.splitlines()[0].split() == ["NAME", "READY", "REASON", "REPLICAS", "INVOCATIONS", "ERRORS", "HANDLER"]
    row = next(line.split() for line in ls.splitlines() if line.startswith("hello"))
    assert row[1] == "True"
    wait_for(lambda: function(cluster, "hello").get("status", {}).get("invocations") == 4, timeout=60,
             what="4 invocations in the status")  # fmt: skip

    metrics = urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10).read().decode()
    assert 'skiff_function_invocations_total{namespace="default",function="hello",code="200"} 4' in metrics
    assert 'skiff_function_cold_starts_total{namespace="default",function="hello"} 2' in metrics
    assert 'skiff_function_duration_seconds_count{namespace="default",function="hello"} 4' in metrics
    assert 'skiff_function_duration_seconds_bucket{namespace="default",function="hello",le="+Inf"} 4' in metrics
    assert 'skiff_function_instances{namespace="default",function="hello"} ' in metrics

    usage = json.loads(skiff(gateway, "usage", "-o", "json").stdout)
    line = next(u for u in usage if u["function"] == "hello")
    assert (line["invocations"], line["errors"]) == (4, 0)
    assert line["gbSeconds"] > 0
    bill = skiff(gateway, "usage").stdout.splitlines()  # the bill as a table
    assert bill[0].split() == ["NAMESPACE", "FUNCTION", "INVOCATIONS", "ERRORS", "DURATION(s)", "GB-SECONDS"]
    assert next(r.split() for r in bill if " hello " in r)[:4] == ["default", "hello", "4", "0"]

    # records survive a restart of the gateway
    gateway.stop()
    gateway.start()
    usage = json.loads(skiff(gateway, "usage", "-o", "json", "--since", "1h").stdout)
    assert next(u for u in usage if u["function"] == "hello")["invocations"] == 4

    skiff(gateway, "delete", "hello")
    wait_for(lambda: cluster.kubectl("get", "configmap", "hello-code", check=False).returncode != 0, timeout=60,
             what="the code ConfigMap deleted with its Function")  # fmt: skip


def test_syntax_error_deploys_nothing(gateway: Gateway, tmp_path: Path) -> None:
    src = tmp_path / "bad.py"
    src.write_text(BAD)
    out = skiff(gateway, "deploy", str(src), "--name", "bad", check=False)
    assert out.returncode == 1
    assert "SyntaxError" in out.stderr and "bad.py" in out.stderr
    assert gateway.server.kubectl("get", "function", "bad", check=False).returncode != 0
    assert gateway.server.kubectl("get", "configmap", "bad-code", check=False).returncode != 0

    missing = tmp_path / "nohandler.py"
    missing.write_text("def other(event, context):\n    return 1\n")
    out = skiff(gateway, "deploy", str(missing), "--name", "nohandler", check=False)
    assert out.returncode == 1 and "no handler function 'handle'" in out.stderr
    assert gateway.server.kubectl("get", "function", "nohandler", check=False).returncode != 0


def test_raising_handler_is_500_with_traceback_in_logs_only(gateway: Gateway, tmp_path: Path) -> None:
    src = tmp_path / "boom.py"
    src.write_text(BOOM)
    skiff(gateway, "deploy", str(src), "--name", "boom")
    # `skiff fn logs -f` started with no instance yet follows the one the call starts
    follow = subprocess.Popen([str(BIN / "skiff"), "fn", "logs", "boom", "-f"], stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.DEVNULL, env=fn_env(gateway))  # fmt: skip
    streamed: list[str] = []

    def read() -> None:
        for line in follow.stdout or ():
            streamed.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        out = skiff(gateway, "invoke", "boom", "--data", '"secret-input"', check=False)
        assert out.returncode == 1
        assert "500" in out.stderr and "Traceback" not in out.stderr and "kaboom" not in out.stderr
        logs = wait_for(lambda: (r := skiff(gateway, "logs", "boom", check=False)).returncode == 0
                        and "kaboom" in r.stdout and r.stdout, timeout=60, what="the traceback in logs")  # fmt: skip
        assert "Traceback" in logs and "ValueError: kaboom secret-input" in logs

        big = b'"' + b"x" * (7 * 1024 * 1024) + b'"'
        assert post(f"{gateway.url}/fn/default/boom", big)[0] == 413
        assert post(f"{gateway.url}/fn/default/missing", b"{}")[0] == 404

        usage = json.loads(skiff(gateway, "usage", "-o", "json").stdout)
        line = next(u for u in usage if u["function"] == "boom")
        assert (line["invocations"], line["errors"]) == (1, 1)
        assert metric(gateway, "skiff_function_errors_total", "boom") == 1

        # and it goes on with what the instance writes next
        wait_for(lambda: any("kaboom secret-input" in x for x in streamed), timeout=60, what="logs -f printing")
        assert skiff(gateway, "invoke", "boom", "--data", '"later-input"', check=False).returncode == 1
        wait_for(lambda: any("kaboom later-input" in x for x in streamed), timeout=60, what="logs -f following")
    finally:
        follow.terminate()
        follow.wait(10)
    skiff(gateway, "delete", "boom")


def test_logs_follow_outlasts_a_quiet_spell(gateway: Gateway, tmp_path: Path) -> None:
    """`skiff fn logs -f` goes on following through a quiet spell longer than its pod watch's bookmark
    period (15 s), as a loaded machine makes between two calls: a BOOKMARK names no pod."""
    src = tmp_path / "hello.py"
    src.write_text(HELLO)
    skiff(gateway, "deploy", str(src), "--name", "quiet")
    follow = subprocess.Popen([str(BIN / "skiff"), "fn", "logs", "quiet", "-f"], stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.PIPE, env=fn_env(gateway))  # fmt: skip
    try:
        time.sleep(20)  # no instance, no pod event for longer than a bookmark period: the quiet spell under test
        assert follow.poll() is None, follow.stderr.read() if follow.stderr else ""
        streamed: list[str] = []
        threading.Thread(target=lambda: streamed.extend(follow.stdout or ()), daemon=True).start()
        assert json.loads(skiff(gateway, "invoke", "quiet", "--data", '{"name": "late"}').stdout)["hello"] == "late"
        wait_for(lambda: any(line.startswith("[pod/") for line in streamed), what="the instance's log followed")
    finally:
        follow.terminate()
        follow.wait(10)
    skiff(gateway, "delete", "quiet")


def apply_function(cluster: Server, name: str, spec: dict[str, Any], *, check: bool = True) -> Any:
    doc = {"apiVersion": "functions.skiff.dev/v1", "kind": "Function", "metadata": {"name": name}, "spec": spec}
    return cluster.kubectl("apply", "-f", "-", input=json.dumps(doc), check=check)


def usage_of(gw: Gateway, name: str) -> dict[str, Any]:
    usage = json.loads(skiff(gw, "usage", "-o", "json").stdout)
    return next((u for u in usage if u["function"] == name), {"invocations": 0, "errors": 0})


def test_schema_timeout_and_queue_bound(gateway: Gateway) -> None:
    cluster = gateway.server
    assert "created CustomResourceDefinition functions.functions.skiff.dev" in cluster.logs()  # at server start
    bad = apply_function(cluster, "invalid", {"handler": "not a handler", "maxScale": 0}, check=False)
    assert bad.returncode != 0 and "spec.maxScale" in bad.stderr and "spec.handler" in bad.stderr

    slow = "import time\ndef handle(event, context):\n    time.sleep(float(event))\n    return 'done'\n"
    spec = {"handler": "slow.handle", "code": {"inline": slow}, "timeoutSeconds": 1, "concurrency": 1,
            "minScale": 1, "maxScale": 1, "queueDepth": 1}  # fmt: skip
    apply_function(cluster, "slow", spec)
    wait_for(lambda: len(fn_pods(cluster, "slow")) == 1, timeout=60, what="minScale's instance before any call")
    wait_for(lambda: post(f"{gateway.url}/fn/default/slow", b"0")[0] == 200, timeout=60, what="slow answering")
    assert post(f"{gateway.url}/fn/default/slow", b"3")[0] == 504  # cut at its timeout

    # one call runs, one waits, the rest are refused at once with 429
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(lambda _: post(f"{gateway.url}/fn/default/slow", b"0.8")[0], range(6)))
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
    cluster.kubectl("delete", "function", "slow")


def test_cron_and_event_triggers(gateway: Gateway) -> None:
    cluster = gateway.server
    code = ("def handle(event, context):\n"
            "    print('got', event['type'], (event.get('object') or {}).get('metadata', {}).get('name', ''))\n"
            "    return {}\n")  # fmt: skip
    ticker = ("import os\n"
              "def handle(event, context):\n"
              "    n = int(open('/tmp/n').read()) if os.path.exists('/tmp/n') else 0\n"
              "    open('/tmp/n', 'w').write(str(n + 1))\n"
              "    print('tick', event['time'], 'call', n + 1)\n"
              "    if n == 0:\n"
              "        raise RuntimeError('the first tick fails')\n"
              "    return {}\n")  # fmt: skip
    triggers = [{"type": "cron", "schedule": "@every 1s"}]
    apply_function(cluster, "ticker", {"handler": "tick.handle", "code": {"inline": ticker}, "triggers": triggers})

    def retried() -> bool:
        # the failed first tick is called again (at least once: retried while it fails), its time unchanged
        out = skiff(gateway, "logs", "ticker", check=False)
        ticks = re.findall(r"tick (\S+) call (\d+)", out.stdout)
        first = next((t for t, n in ticks if n == "1"), None)
        return first is not None and sum(t == first for t, _ in ticks) >= 2

    wait_for(retried, timeout=60, interval=1.0, what="the failed cron call retried")
    wait_for(lambda: usage_of(gateway, "ticker")["invocations"] >= 3, timeout=60, what="cron calls metered")
    assert usage_of(gateway, "ticker")["errors"] >= 1
    cluster.kubectl("delete", "function", "ticker")

    triggers = [{"type": "event", "kind": "ConfigMap", "labelSelector": "watched=yes"}]
    apply_function(cluster, "watcher", {"handler": "w.handle", "code": {"inline": code}, "triggers": triggers})
    cluster.kubectl("create", "configmap", "ignored", "--from-literal=a=b")
    cluster.kubectl("create", "configmap", "watched-cm", "--from-literal=a=b")
    cluster.kubectl("label", "configmap", "watched-cm", "watched=yes")
    changes = iter(range(1000))

    def delivered() -> str | None:
        # a change to the watched object (repeated: the trigger's watch starts on the gateway's next tick)
        cluster.kubectl("annotate", "--overwrite", "configmap", "watched-cm", f"n={next(changes)}")
        cluster.kubectl("annotate", "--overwrite", "configmap", "ignored", f"n={next(changes)}")
        out = skiff(gateway, "logs", "watcher", check=False)
        return out.stdout if out.returncode == 0 and "got MODIFIED watched-cm" in out.stdout else None

    logs = wait_for(delivered, timeout=60, interval=1.0, what="the event call")
    assert "ignored" not in logs
    cluster.kubectl("delete", "function", "watcher")
    cluster.kubectl("delete", "configmap", "ignored", "watched-cm")


def metric(gw: Gateway, name: str, function: str) -> float:
    page = urllib.request.urlopen(f"{gw.url}/metrics", timeout=10).read().decode()
    prefix = f'{name}{{namespace="default",function="{function}"}} '
    return float(next((line[len(prefix):] for line in page.splitlines() if line.startswith(prefix)), "0"))


def test_50_concurrent_calls_scale_out_and_back_and_broken_code(gateway: Gateway) -> None:
    cluster = gateway.server
    slow = "import time, uuid\nME = uuid.uuid4().hex\ndef handle(event, context):\n    time.sleep(1)\n    return ME\n"
    # a short stable window (panic window 10 % of it) so the test sees the way back in seconds
    spec = {"handler": "busy.handle", "code": {"inline": slow}, "concurrency": 10, "maxScale": 4, "idleTimeout": 2,
            "stableWindow": 6}  # fmt: skip
    apply_function(cluster, "busy", spec)
    assert post(f"{gateway.url}/fn/default/busy", b"{}")[0] == 200  # one instance, warm
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: post(f"{gateway.url}/fn/default/busy", b"{}"), range(50)))
    assert [status for status, _ in answers] == [200] * 50  # queued, not refused: the queue bound is 100
    served_by = {body for _, body in answers}
    assert 1 < len(served_by) <= 4, "50 calls at 10 per instance scaled out, never past maxScale"
    wait_for(lambda: fn_pods(cluster, "busy") == [], timeout=60, what="scale back to zero")
    cluster.kubectl("delete", "function", "busy")

    # code that compiles but cannot load: the call fails (after a second try) and `skiff fn ls` tells why
    broken = "import no_such_module\ndef handle(event, context):\n    return 1\n"
    apply_function(cluster, "broken", {"handler": "broken.handle", "code": {"inline": broken}})
    status, body = post(f"{gateway.url}/fn/default/broken", b"{}")
    assert status == 503 and b"No module named 'no_such_module'" in body

    def reported() -> str | None:
        out = skiff(gateway, "ls")
        row = next((line.split() for line in out.stdout.splitlines() if line.startswith("broken")), [])
        return out.stderr if row[1:3] == ["False", "InstanceFailed"] else None

    assert "no_such_module" in wait_for(reported, timeout=60, what="fn ls showing the failure")
    ready = function(cluster, "broken")["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InstanceFailed")
    assert "no_such_module" in ready["message"]
    cluster.kubectl("delete", "function", "broken")


def test_deploy_as_an_image(gateway: Gateway, registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "imaged.py"
    src.write_text(HELLO)
    out = skiff(gateway, "deploy", str(src), "--name", "imaged", "--build", "--registry", registry.host)
    assert "step 2/3: COPY" in out.stderr and "pushing" in out.stderr  # progress shown
    image = function(gateway.server, "imaged")["spec"]["code"]["image"]
    assert image.startswith(f"{registry.host}/fn-default-imaged:")
    assert gateway.server.kubectl("get", "configmap", "imaged-code", check=False).returncode != 0
    assert json.loads(skiff(gateway, "invoke", "imaged", "--data", '{"name": "img"}').stdout)["hello"] == "img"
    skiff(gateway, "delete", "imaged")


def test_topic_delivery_at_least_once(gateway: Gateway) -> None:
    cluster = gateway.server
    code = ("import os\n"
            "def handle(event, context):\n"
            "    n = int(open('/tmp/n').read()) if os.path.exists('/tmp/n') else 0\n"
            "    open('/tmp/n', 'w').write(str(n + 1))\n"
            "    print('attempt', n + 1, event['order'])\n"
            "    if n == 0:\n"
            "        raise RuntimeError('the first try fails')\n"
            "    return {}\n")  # fmt: skip
    triggers = [{"type": "topic", "topic": "orders"}]
    apply_function(cluster, "orders", {"handler": "o.handle", "code": {"inline": code}, "triggers": triggers})
    wait_for(lambda: function(cluster, "orders").get("status", {}).get("conditions"), timeout=60,
             what="the gateway to know the function")  # fmt: skip
    out = skiff(gateway, "publish", "orders", "--data", '{"order": 42}')
    assert "1 subscriber(s)" in out.stdout
    logs = wait_for(lambda: (r := skiff(gateway, "logs", "orders", check=False)).returncode == 0
                    and "attempt 2 42" in r.stdout and r.stdout, timeout=60, what="the retried delivery")  # fmt: skip
    assert "attempt 1 42" in logs and "the first try fails" in logs
    wait_for(lambda: usage_of(gateway, "orders")["invocations"] == 2, timeout=60, what="two metered calls")
    assert usage_of(gateway, "orders")["errors"] == 1
    cluster.kubectl("delete", "function", "orders")


def test_gateway_restart_takes_over_running_instances(gateway: Gateway) -> None:
    cluster = gateway.server
    code = "import uuid\nME = uuid.uuid4().hex\ndef handle(event, context):\n    return {'instance': ME}\n"
    apply_function(cluster, "sticky", {"handler": "s.handle", "code": {"inline": code}, "idleTimeout": 4})
    status, body = post(f"{gateway.url}/fn/default/sticky", b"{}")
    assert status == 200
    first = json.loads(body)["instance"]
    # a warm runtime answers before the gateway labels its pod as the function's
    pods = [p["metadata"]["name"] for p in wait_for(lambda: fn_pods(cluster, "sticky"), what="the instance's pod")]
    assert len(pods) == 1

    # the warm pool's runtimes from now on, change by change: the old gateway's refill may not be
    # created yet, or not finished (then deleted, by it or by the new one, and terminating a while)
    warm_pods = Recording(cluster, "/api/v1/namespaces/default/pods?labelSelector=functions.skiff.dev%2Fpool%3Dwarm")
    gateway.stop()
    gateway.start()
    # the same instance answers: taken over, neither orphaned nor started twice
    status, body = post(f"{gateway.url}/fn/default/sticky", b"{}")
    assert (status, json.loads(body)["instance"]) == (200, first)
    assert [p["metadata"]["name"] for p in fn_pods(cluster, "sticky")] == pods
    assert "took over" in gateway.logs() and pods[0] in gateway.logs().rsplit("took over", 1)[1]

    def live(state: dict[str, Any]) -> list[str]:
        return [name for name, p in state.items() if not p["metadata"].get("deletionTimestamp")]

    # the warm pool taken over too, or refilled once: one runtime in the end, never two side by side
    wait_for(lambda: len(live(next(Recording(cluster, warm_pods.path).states()))) == 1, what="one warm runtime")
    most = max(len(live(state)) for state in warm_pods.states())
    assert most == 1, [live(state) for state in warm_pods.states()]
    # and it is still scaled: stopped after its idle timeout
    wait_for(lambda: fn_pods(cluster, "sticky") == [], timeout=60, what="the taken-over instance scaled to zero")
    cluster.kubectl("delete", "function", "sticky")


def test_a_function_calls_another_through_the_gateway(gateway: Gateway) -> None:
    cluster = gateway.server
    callee = "def handle(event, context):\n    return {'doubled': event['n'] * 2}\n"
    caller = ("import json, os, urllib.request\n"
              "def handle(event, context):\n"
              "    url = os.environ['SKIFF_GATEWAY'] + '/fn/' + context.namespace + '/doubler'\n"
              "    req = urllib.request.Request(url, data=json.dumps(event).encode())\n"
              "    with urllib.request.urlopen(req, timeout=30) as resp:\n"
              "        return {'via': os.environ['SKIFF_GATEWAY'], 'answer': json.loads(resp.read()),\n"
              "                'secret': os.environ['API_KEY']}\n")  # fmt: skip
    apply_function(cluster, "doubler", {"handler": "d.handle", "code": {"inline": callee}})
    # its own image's pod (not the warm pool) gets the gateway's address from its env too, and a Secret's value
    cluster.kubectl("create", "secret", "generic", "caller-secret", "--from-literal=key=s3cret")
    env = [{"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "caller-secret", "key": "key"}}}]
    apply_function(cluster, "caller", {"handler": "c.handle", "code": {"inline": caller}, "env": env,
                                       "resources": {"limits": {"memory": "96Mi"}}})  # fmt: skip
    status, body = post(f"{gateway.url}/fn/default/caller", b'{"n": 21}')
    assert status == 200, body
    assert json.loads(body) == {"via": f"http://{POD_GATEWAY}:{gateway.port}", "answer": {"doubled": 42},
                                "secret": "s3cret"}  # fmt: skip
    assert usage_of(gateway, "doubler")["invocations"] == 1
    cluster.kubectl("delete", "function", "caller", "doubler")
    cluster.kubectl("delete", "secret", "caller-secret")


INVOKER = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: guarded-invoker}
rules: [{apiGroups: [functions.skiff.dev], resources: [functions], resourceNames: [guarded], verbs: [invoke]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: guarded-invoker}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: guarded-invoker}
subjects: [{kind: ServiceAccount, name: fn-caller, namespace: default}]
"""


def test_calls_need_a_token_allowed_to_invoke(gateway: Gateway) -> None:
    cluster = gateway.server
    code = "def handle(event, context):\n    return {'hi': context.function_name}\n"
    apply_function(cluster, "guarded", {"handler": "g.handle", "code": {"inline": code}})
    apply_function(cluster, "open", {"handler": "g.handle", "code": {"inline": code}, "public": True})
    cluster.kubectl("create", "serviceaccount", "fn-caller")
    token = cluster.kubectl("create", "token", "fn-caller").stdout.strip()
    gateway.stop()
    gateway.extra = ("--auth", "token")
    gateway.start()
    try:
        url = f"{gateway.url}/fn/default/guarded"
        status, body = post(url, b"{}")
        assert (status, json.loads(body)["reason"]) == (401, "Unauthorized")
        assert post(url, b"{}", token="not-a-token")[0] == 401
        status, body = post(url, b"{}", token=token)  # a known identity, but no role lets it invoke
        assert status == 403 and "may not invoke function" in json.loads(body)["message"]
        cluster.kubectl("apply", "-f", "-", input=INVOKER)
        status, body = wait_for(lambda: (r := post(url, b"{}", token=token))[0] == 200 and r, timeout=60,
                                what="the call allowed once the role is bound")  # fmt: skip
        assert json.loads(body) == {"hi": "guarded"}
        out = skiff(gateway, "invoke", "guarded", "--token", token)
        assert json.loads(out.stdout) == {"hi": "guarded"}
        assert post(f"{gateway.url}/fn/default/open", b"{}")[0] == 200  # public: no token asked
        assert usage_of(gateway, "guarded")["invocations"] == 2  # refused calls are no invocations
    finally:
        gateway.stop()
        gateway.extra = ()
        gateway.start()
        cluster.kubectl("delete", "function", "guarded", "open")
        cluster.kubectl("delete", "-f", "-", input=INVOKER)
        cluster.kubectl("delete", "serviceaccount", "fn-caller")
