"""Unit tests of the node agent's usage figures: CPU counters turned into rates, /proc parsing, the report."""

from __future__ import annotations

from skiff.node.agent.stats import ContainerSample, RateTracker, Sample, build_report, parse_meminfo, parse_proc_stat
from skiff.node.runtime.cgroups import Usage


def test_a_rate_needs_two_samples_and_a_growing_counter() -> None:
    rates = RateTracker()
    assert rates.update("p/c", Sample(10.0, 1_000_000_000)) is None
    assert rates.update("p/c", Sample(12.0, 1_500_000_000)) == 250_000_000  # 0.5 s of CPU in 2 s: 250m
    assert rates.update("p/c", Sample(13.0, 100)) is None  # a new container of the same name: counter reset
    assert rates.update("p/c", Sample(14.0, 100)) == 0
    rates.keep([])
    assert rates.update("p/c", Sample(15.0, 200)) is None  # forgotten once gone


def test_proc_stat_counts_busy_time_only() -> None:
    text = "cpu  100 20 30 5000 70 1 2 3 40 0\ncpu0 50 10 15 2500 35 0 1 1 20 0\n"
    assert parse_proc_stat(text, ticks=100) == (100 + 20 + 30 + 1 + 2 + 3) * 10_000_000


def test_meminfo_working_set() -> None:
    text = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  300 kB\n"
    assert parse_meminfo(text) == 500 * 1024


def test_report_has_running_pods_with_rates_grouped_by_pod() -> None:
    pods = {"u1": {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}}}
    usage = Usage(cpu_usage_ns=5, memory_working_set_bytes=64 * 1024 * 1024, memory_usage_bytes=0)
    samples = [ContainerSample("u1", "app", usage), ContainerSample("u1", "side", usage),
               ContainerSample("gone", "x", usage)]  # fmt: skip
    report = build_report(pods, samples, {"u1/app": 12_000_000, "gone/x": 1})
    assert len(report) == 1
    entry = report[0].as_report()
    assert (entry["namespace"], entry["name"], entry["uid"]) == ("ns", "web", "u1")
    assert entry["containers"] == [{"name": "app", "usage": {"cpu": "12000000n", "memory": "64Mi"}}]
