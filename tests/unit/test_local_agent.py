"""`skiff server`'s own node agent: its options from the server's flags, and what a machine lacks."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from skiff.cli import local_agent
from skiff.cli.main import build_parser


def options(*argv: str) -> local_agent.LocalAgentOptions | None:
    return local_agent.local_agent_options(build_parser().parse_args(["server", *argv]))


def test_defaults_name_the_host_and_use_the_bundled_registry() -> None:
    opts = options()
    assert opts is not None
    assert opts.node_name == socket.gethostname().lower()
    assert (opts.pod_cidr, opts.bridge, opts.netns_prefix, opts.cgroup_parent) == (
        "10.42.0.0/24", "skiff0", "skiff-", "skiff"
    )  # fmt: skip
    assert opts.registry == "127.0.0.1:5000" and opts.extra_args == ()


@pytest.mark.parametrize(
    ("argv", "registry"),
    [
        (["--registry-address", "0.0.0.0:5050"], "127.0.0.1:5050"),  # every address: reached through loopback
        (["--registry-address", "10.0.0.5:5000"], "10.0.0.5:5000"),
        (["--disable-registry", "--registry", "registry.example:443"], "registry.example:443"),
        (["--disable-registry"], "127.0.0.1:5000"),
    ],
    ids=["any-address", "one-address", "external", "external-default"],
)
def test_registry(argv: list[str], registry: str) -> None:
    opts = options(*argv)
    assert opts is not None and opts.registry == registry


def test_disable_agent_and_passthrough() -> None:
    assert options("--disable-agent") is None
    opts = options("--node-name", "Web-1", "--agent-arg=--disable-proxy", "--agent-arg=--kubelet-port=0")
    assert opts is not None and opts.node_name == "web-1"
    assert opts.extra_args == ("--disable-proxy", "--kubelet-port=0")


def test_missing_tools_are_named_by_their_debian_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(local_agent, "CNI_DIRS", (tmp_path,))
    assert local_agent.missing_requirements() == (
        "install the Debian packages runc iproute2 iptables containernetworking-plugins"
    )
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert "needs root" in (local_agent.missing_requirements() or "")
