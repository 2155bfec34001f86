"""`skiff server`'s cluster DNS child: its options from the server's flags, its command line, the local agent's."""

from __future__ import annotations

import pytest

from skiff.cli import cluster_dns
from skiff.cli.children import ChildSpec
from skiff.cli.main import build_parser


def options(*argv: str) -> cluster_dns.ClusterDnsOptions | None:
    return cluster_dns.cluster_dns_options(build_parser().parse_args(["server", *argv]))


def test_defaults_and_the_service_range() -> None:
    opts = options("--dns-address", "192.0.2.9")
    assert opts == cluster_dns.ClusterDnsOptions(cluster_ip="10.43.0.10", address="192.0.2.9", port=53)
    opts = options("--service-cluster-ip-range", "10.96.0.0/12", "--bind-address", "198.51.100.7")
    assert opts is not None and (opts.cluster_ip, opts.address) == ("10.96.0.10", "198.51.100.7")
    assert options("--disable-dns") is None


def test_child_command_line() -> None:
    opts = cluster_dns.ClusterDnsOptions(cluster_ip="10.43.0.10", address="192.0.2.9", port=5353,
                                         cluster_domain="corp.local", upstreams=("192.0.2.53",))  # fmt: skip
    spec = cluster_dns.cluster_dns_spec(opts, "/data/kubeconfig.yaml")
    args = spec.argv
    assert spec.name == "dns" and args[0] == "dns"
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["--listen"] == "192.0.2.9:5353" and pairs["--service-ip"] == "10.43.0.10"
    assert pairs["--cluster-domain"] == "corp.local" and pairs["--upstream"] == "192.0.2.53"


def test_local_agent_learns_the_dns_unless_told_otherwise() -> None:
    opts = cluster_dns.ClusterDnsOptions(cluster_ip="10.43.0.10", address="192.0.2.9", port=53)
    agent = ChildSpec("agent", ("agent", "--node-name", "n"))
    assert cluster_dns.with_cluster_dns(agent, opts).argv[-4:] == (
        "--cluster-dns", "10.43.0.10", "--cluster-domain", "cluster.local"
    )  # fmt: skip
    own = ChildSpec("agent", ("agent", "--cluster-dns=10.0.0.53"))
    assert cluster_dns.with_cluster_dns(own, opts).argv == ("agent", "--cluster-dns=10.0.0.53", "--cluster-domain",
                                                            "cluster.local")  # fmt: skip
    scheduler = ChildSpec("scheduler", ("scheduler",))
    assert cluster_dns.with_cluster_dns(scheduler, opts) is scheduler


def test_port_53_needs_root(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    opts = cluster_dns.ClusterDnsOptions(cluster_ip="10.43.0.10", address="192.0.2.9", port=53)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr(cluster_dns, "_unprivileged_port_start", lambda: 1024)
    assert cluster_dns.cluster_dns_child(opts, "/k") is None
    assert "needs root" in caplog.text
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert cluster_dns.cluster_dns_child(opts, "/k") is not None
