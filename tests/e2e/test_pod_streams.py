"""`kubectl logs`, `kubectl exec` and `kubectl port-forward` against pods on a real agent and runc.

The apiserver proxies pods/log, pods/exec and pods/portforward to the agent's kubelet API (on a
free port here) with its kubelet-client certificate; the tests drive real kubectl and check what
its user sees: output, exit codes, Kubernetes' error messages, a terminal, a forwarded port.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import ssl
import struct
import subprocess
import termios
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.agent_node import AgentNode, NodeSetup, Registry, missing_requirements, node_fixtures, wait_for
from tests.e2e.cluster import Server, kubectl_binary
from tests.e2e.test_agent import container_state, get_pod, pod

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))
NODE = "e2e-streams"  # a pod network of its own: test_agent.py's node may run (and be cleaned up) meanwhile


def apply(cluster: Server, ns: str, *docs: dict[str, Any]) -> None:
    for doc in docs:
        doc["spec"]["nodeName"] = NODE
        doc["spec"]["terminationGracePeriodSeconds"] = 1  # shell loops as pid 1 ignore SIGTERM
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))


registry, cluster, agent = node_fixtures(NodeSetup(
    name="stream", node=NODE, pod_cidr="10.199.43.0/24",
    agent_args=("--container-log-max-size=32Ki", "--container-log-max-files=3",
                "--container-log-monitor-interval=300ms"),
))  # fmt: skip


def running(cluster: Server, ns: str, name: str, restarts: int = 0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        p = get_pod(cluster, ns, name)
        statuses = p.get("status", {}).get("containerStatuses") or []
        ok = statuses and all("running" in s.get("state", {}) for s in statuses)
        return p if ok and all(s.get("restartCount", 0) >= restarts for s in statuses) else None

    result: dict[str, Any] = wait_for(check, what=f"{name} running")
    return result


def kubectl_env(cluster: Server) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HOME": str(cluster.data_dir / "home")}


@pytest.fixture(scope="module")
def pods(cluster: Server, agent: AgentNode, registry: Registry) -> Iterator[str]:
    """One namespace of long-running pods the tests share (made once: starting pods is the slow part)."""
    name = "pod-streams"
    cluster.kubectl("create", "namespace", name)
    counter = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done"
    restarting = (
        "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo attempt $n;"
        ' if [ $n = 1 ]; then exit 1; fi; exec sleep 3600'
    )
    two = pod("two", registry.busybox, ["sh", "-c", "echo from a; exec sleep 3600"])
    two["spec"]["containers"][0]["name"] = "a"
    two["spec"]["containers"].append({"name": "b", "image": registry.busybox,
                                      "command": ["sh", "-c", "echo from b; exec sleep 3601"]})  # fmt: skip
    apply(
        cluster, name,
        pod("counter", registry.busybox, ["sh", "-c", counter]),
        pod("early-late", registry.busybox,
            ["sh", "-c", "echo early; sleep 2; echo late; echo err >&2; exec sleep 3600"]),
        pod("restarting", registry.busybox, ["sh", "-c", restarting],
            container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
            volumes=[{"name": "data", "emptyDir": {}}]),
        two,
        pod("chatty", registry.busybox,  # ~20 KB/s of log: rotated every two seconds or so
            ["sh", "-c", "i=0; pad=$(printf '%0990d' 0); while true; do i=$((i+1)); echo $i $pad; sleep 0.05; done"]),
        pod("web", registry.busybox,
            ["sh", "-c", "mkdir -p /www && echo hello through port-forward > /www/index.html && "
                         "exec httpd -f -p 127.0.0.1:8080 -h /www"]),
        pod("echo", registry.busybox, ["nc", "-ll", "-p", "9090", "-e", "cat"]),  # an echo server
    )  # fmt: skip
    for p in ("counter", "early-late", "two", "web", "chatty", "echo"):
        running(cluster, name, p)
    running(cluster, name, "restarting", restarts=1)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=60s", check=False, timeout=90)


def test_logs_plain_tail_timestamps_and_since(cluster: Server, pods: str) -> None:
    # the counter writes a line every 0.2 s from its start: a loaded machine may not have written three yet
    first = wait_for(lambda: (out := cluster.kubectl("logs", "-n", pods, "counter").stdout.splitlines())[2:] and out,
                     what="the counter's first three lines")  # fmt: skip
    assert first[:3] == ["line 1", "line 2", "line 3"]
    tail = cluster.kubectl("logs", "-n", pods, "counter", "--tail=2").stdout.splitlines()
    assert len(tail) == 2 and all(re.fullmatch(r"line \d+", line) for line in tail)
    assert int(tail[0].split()[1]) >= len(first) - 1 and int(tail[1].split()[1]) == int(tail[0].split()[1]) + 1
    assert cluster.kubectl("logs", "-n", pods, "counter", "--tail=0").stdout == ""

    def all_three() -> list[str] | None:  # "late" comes two seconds after the pod started: wait for it
        lines: list[str] = cluster.kubectl("logs", "-n", pods, "early-late", "--timestamps").stdout.splitlines()
        return lines if len(lines) >= 3 else None

    stamped = wait_for(all_three, what="early-late's three lines")
    stamps = [line.split(" ", 1) for line in stamped]
    assert [text for _, text in stamps] == ["early", "late", "err"]
    for ts, _ in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", ts), ts
    # --since-time at (the second of) "late": "early" was written two seconds before it
    late = stamps[1][0].split(".")[0] + "Z"
    assert cluster.kubectl("logs", "-n", pods, "early-late", f"--since-time={late}").stdout.splitlines() == [
        "late", "err"]  # fmt: skip
    assert cluster.kubectl("logs", "-n", pods, "early-late", "--since=1h").stdout.splitlines() == [
        "early", "late", "err"]  # fmt: skip
    limited = cluster.kubectl("logs", "-n", pods, "early-late", "--limit-bytes=3").stdout
    assert limited == "ear"


def test_logs_follow_streams_what_the_container_writes(cluster: Server, pods: str) -> None:
    before = cluster.kubectl("logs", "-n", pods, "counter").stdout.splitlines()
    last = int(before[-1].split()[1])
    proc = subprocess.Popen([kubectl_binary(), "logs", "-f", "-n", pods, "counter", "--tail=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=kubectl_env(cluster))  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"kubectl logs -f ended: {proc.stderr.read() if proc.stderr else ''}"
            seen.append(int(line.split()[1]))
            if seen[-1] > last + 3:
                break
        assert seen[-1] > last + 3, seen
        assert seen == list(range(seen[0], seen[0] + len(seen)))  # nothing lost, nothing repeated
    finally:
        proc.terminate()
        proc.wait(10)


def test_logs_previous_and_containers(cluster: Server, pods: str) -> None:
    assert cluster.kubectl("logs", "-n", pods, "restarting").stdout == "attempt 2\n"
    assert cluster.kubectl("logs", "-n", pods, "restarting", "--previous").stdout == "attempt 1\n"
    out = cluster.kubectl("logs", "-n", pods, "counter", "--previous", check=False)
    assert out.returncode != 0
    assert 'Error from server (BadRequest): previous terminated container "c" in pod "counter" not found' in out.stderr

    assert cluster.kubectl("logs", "-n", pods, "two", "-c", "b").stdout == "from b\n"
    assert cluster.kubectl("logs", "-n", pods, "two", "-c", "a").stdout == "from a\n"
    defaulted = cluster.kubectl("logs", "-n", pods, "two")  # kubectl picks the first container and says so
    assert defaulted.stdout == "from a\n" and 'Defaulted container "a" out of: a, b' in defaulted.stderr
    raw = cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{pods}/pods/two/log", check=False)
    assert raw.returncode != 0
    assert "a container name must be specified for pod two, choose one of: [a b]" in raw.stderr
    bad = cluster.kubectl("logs", "-n", pods, "two", "-c", "nope", check=False)
    assert "container nope is not valid for pod two" in bad.stderr


def test_logs_and_exec_of_a_pod_that_is_not_running_yet(cluster: Server, pods: str) -> None:
    apply(cluster, pods, pod("pending", "127.0.0.1:1/nothing/here:1", ["true"]))
    def reason() -> str:
        return str(container_state(get_pod(cluster, pods, "pending")).get("state", {}).get("waiting", {}).get("reason"))

    wait_for(lambda: reason() in ("ErrImagePull", "ImagePullBackOff"), what="pull failure")
    out = cluster.kubectl("logs", "-n", pods, "pending", check=False)
    assert out.returncode != 0
    assert re.search(r'Error from server \(BadRequest\): container "c" in pod "pending" is waiting to start: '
                     r"(image can't be pulled|trying and failing to pull image)", out.stderr), out.stderr  # fmt: skip
    execed = cluster.kubectl("exec", "-n", pods, "pending", "--", "true", check=False)
    assert execed.returncode != 0 and 'container not found ("c")' in execed.stderr, execed.stderr


def test_exec_output_exit_code_and_stdin(cluster: Server, pods: str) -> None:
    out = cluster.kubectl("exec", "-n", pods, "counter", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                          check=False)  # fmt: skip
    assert out.returncode == 3
    assert out.stdout == "out\n" and "err\n" in out.stderr
    assert cluster.kubectl("exec", "-n", pods, "counter", "--", "cat", "/proc/1/cmdline").stdout.startswith("sh")
    piped = cluster.kubectl("exec", "-i", "-n", pods, "counter", "--", "tr", "a-z", "A-Z", input="hello stdin\n")
    assert piped.stdout == "HELLO STDIN\n"
    two = cluster.kubectl("exec", "-n", pods, "two", "-c", "b", "--", "sh", "-c", "cat /proc/1/cmdline")
    assert two.stdout == "sleep\x003601\x00"  # container b's own process
    missing = cluster.kubectl("exec", "-n", pods, "counter", "--", "/no/such/binary", check=False)
    assert missing.returncode == 126, missing  # as with containerd
    assert ('OCI runtime exec failed: exec failed: unable to start container process: exec: "/no/such/binary": '
            "stat /no/such/binary: no such file or directory: unknown") in missing.stderr, missing.stderr
    assert "command terminated with exit code 126" in missing.stderr


def _read_until(fd: int, pattern: bytes, timeout: float = 60.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while pattern not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_exec_with_a_terminal(cluster: Server, pods: str) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    proc = subprocess.Popen([kubectl_binary(), "exec", "-it", "-n", pods, "counter", "--", "sh"], stdin=slave,
                            stdout=slave, stderr=slave, env=kubectl_env(cluster), start_new_session=True)  # fmt: skip
    os.close(slave)
    try:
        _read_until(master, b"# ")  # the shell's prompt: kubectl has made its terminal raw by now
        os.write(master, b"tty; stty size; echo $((6*7))\n")
        out = _read_until(master, b"\n42\r")
        assert b"/dev/pts/" in out and b"33 101" in out and b"\n42\r" in out, out
        os.write(master, b"exit 5\n")
        assert proc.wait(60) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_kubectl_run_i_feeds_stdin_once(cluster: Server, registry: Registry, pods: str) -> None:
    """`kubectl run -i --rm` makes a pod with stdin and stdinOnce, attaches, sends what it reads and closes the
    container's stdin at its end of input; the container ends, and the pod is deleted."""
    overrides = {"spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1}}
    out = cluster.kubectl("run", "once", "-n", pods, "-i", "--rm", "--restart=Never", f"--image={registry.busybox}",
                          f"--overrides={json.dumps(overrides)}", "--", "sh", "-c",
                          "while read l; do echo got $l; done; echo stdin closed",
                          input="one\ntwo\n", timeout=90)  # fmt: skip
    assert "got one\ngot two\nstdin closed\n" in out.stdout, out
    assert 'pod "once" deleted' in out.stdout
    assert cluster.kubectl("get", "pod", "once", "-n", pods, check=False).returncode != 0


def test_attach_stdin_sessions_and_terminal(cluster: Server, registry: Registry, pods: str) -> None:
    """Without stdinOnce the container's stdin outlives an attach session, and its stderr is the client's; with a
    tty, `kubectl attach -it` is a terminal of the container: its prompt shows at once, its size follows the
    client's."""
    loop = "while read l; do echo echo: $l; echo err: $l >&2; done"
    reader = pod("reader", registry.busybox, ["sh", "-c", loop], container={"stdin": True})
    terminal = pod("terminal", registry.busybox, ["sh"], container={"stdin": True, "tty": True})
    apply(cluster, pods, reader, terminal)
    for name in ("reader", "terminal"):
        running(cluster, pods, name)
    for word in ("one", "two"):  # two sessions, one after the other
        proc = subprocess.Popen([kubectl_binary(), "attach", "-i", "-n", pods, "reader"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=kubectl_env(cluster))  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:  # what kubectl reads before it is attached it sends once it is
            proc.stdin.write(f"{word}\n".encode())
            proc.stdin.close()  # the end of this client's input: the container's stdin stays open
            out = _read_until(proc.stdout.fileno(), f"echo: {word}\n".encode())
            assert f"echo: {word}\n".encode() in out and b"err:" not in out, out
            err = _read_until(proc.stderr.fileno(), f"err: {word}\n".encode())
            assert f"err: {word}\n".encode() in err, err
        finally:
            proc.kill()
            proc.wait()
    assert running(cluster, pods, "reader")  # still reading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 27, 88, 0, 0))
    proc = subprocess.Popen([kubectl_binary(), "attach", "-it", "-n", pods, "terminal"], stdin=slave, stdout=slave,
                            stderr=slave, env=kubectl_env(cluster), start_new_session=True)  # fmt: skip
    os.close(slave)
    try:
        os.write(master, b"\n")  # a new prompt (the first was printed before the attach)
        _read_until(master, b"# ")
        os.write(master, b"stty size; echo $((6*7))\n")
        out = _read_until(master, b"\n42\r\n/ # ")  # the next prompt, before any other key is pressed
        assert b"27 88" in out and b"\n42\r\n/ # " in out, out
        os.write(master, b"exit 0\n")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_port_forward_to_httpd(cluster: Server, pods: str) -> None:
    proc = subprocess.Popen([kubectl_binary(), "port-forward", "-n", pods, "pod/web", ":8080"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=kubectl_env(cluster))  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, f"{line!r} {proc.stderr.read() if proc.poll() is not None and proc.stderr else ''}"
        url = f"http://127.0.0.1:{match.group(1)}/"
        for _ in range(3):  # each fetch is a connection of its own, a stream pair in the same session
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.read() == b"hello through port-forward\n"
    finally:
        proc.terminate()
        proc.wait(10)


def test_port_forward_to_a_closed_port_says_why(cluster: Server, pods: str) -> None:
    proc = subprocess.Popen([kubectl_binary(), "port-forward", "-n", pods, "pod/web", ":9"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=kubectl_env(cluster))  # fmt: skip
    try:
        assert proc.stdout is not None
        match = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 9", proc.stdout.readline())
        assert match
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/", timeout=10).read()
        proc.wait(20)  # kubectl 1.37 ends port-forward when the pod refuses the port
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        err = proc.stderr.read() if proc.stderr else ""
    assert "connection refused" in err.lower(), err


def test_kubelet_api_lets_only_the_apiserver_in(cluster: Server, agent: AgentNode, pods: str) -> None:
    node = json.loads(cluster.kubectl("get", "node", NODE, "-o", "json").stdout)
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == agent.kubelet_port
    url = f"https://127.0.0.1:{agent.kubelet_port}/containerLogs/{pods}/two/a"
    tls = cluster.data_dir / "tls"

    def fetch(cert: str | None) -> tuple[int, str]:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(tls / f"{cert}.crt", tls / f"{cert}.key")
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    assert fetch("kubelet-client") == (200, "from a\n")
    code, text = fetch("admin")
    assert code == 403 and "user=system:admin" in text
    assert fetch(None)[0] == 401


def test_logs_rotate_by_size_and_read_across_files(cluster: Server, agent: AgentNode, pods: str) -> None:
    uid = get_pod(cluster, pods, "chatty")["metadata"]["uid"]
    logs = agent.state_dir / "pods" / uid / "logs" / "c"

    def rotated() -> list[str]:
        return sorted(p.name for p in logs.iterdir() if p.name.startswith("0.log."))

    first = wait_for(lambda: rotated()[:1], what="a rotated log")[0]
    wait_for(lambda: rotated() and rotated()[0] != first, what="the oldest rotated log dropped")
    assert len(rotated()) <= 2  # --container-log-max-files=3, the live one included
    sizes = []
    for p in logs.iterdir():
        with contextlib.suppress(FileNotFoundError):  # the oldest may go meanwhile
            sizes.append(p.stat().st_size)
    assert sizes and max(sizes) < 64 * 1024  # each about --container-log-max-size
    numbers = [int(line.split()[0]) for line in cluster.kubectl("logs", "-n", pods, "chatty").stdout.splitlines()]
    assert numbers[0] > 1  # the oldest lines went with the dropped file
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # nothing lost between files
    out = cluster.kubectl("logs", "-n", pods, "chatty", "--tail=3").stdout
    tail = [int(line.split()[0]) for line in out.splitlines()]
    assert len(tail) == 3 and tail == list(range(tail[0], tail[0] + 3)) and tail[0] >= numbers[-1] - 2


def test_the_python_client_execs_and_forwards_over_channels(cluster: Server, pods: str) -> None:
    """The official client speaks v4.channel.k8s.io for exec and for port-forward (ports=..., no SPDY)."""
    from kubernetes import client, config
    from kubernetes.stream import portforward, stream

    api = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    out = stream(api.connect_get_namespaced_pod_exec, "counter", pods, command=["sh", "-c", "echo hi; echo oops >&2"],
                 stdout=True, stderr=True, stdin=False, tty=False)  # fmt: skip
    assert sorted(out.splitlines()) == ["hi", "oops"]  # the client merges stdout and stderr
    # an echo server: the connection stays open (the client drops what is in flight when the WebSocket closes)
    pf = portforward(api.connect_get_namespaced_pod_portforward, "echo", pods, ports="9090")
    try:
        sock = pf.socket(9090)
        sock.setblocking(True)
        sock.settimeout(10)
        sock.sendall(b"ping\n")
        data = b""
        while not data.endswith(b"\n"):
            data += sock.recv(4096)
        assert data == b"ping\n"
        assert pf.error(9090) is None
        sock.close()
    finally:
        pf.close()
