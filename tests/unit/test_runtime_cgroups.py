"""cgroup paths and usage parsing for v1 (per-controller trees) and v2 (one unified tree).

The files are laid out in a temporary directory as the kernel shows them; the tests on real
runc (tests/node) read this host's real cgroups.
"""

from __future__ import annotations

from pathlib import Path

from skiff.node.runtime.cgroups import Cgroups, detect_version


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v1_paths_usage_and_removal(tmp_path: Path) -> None:
    for controller in ("cpu", "cpuacct", "memory", "pids", "unified"):
        (tmp_path / controller).mkdir()
    cg = Cgroups("skiff", root=tmp_path)
    assert detect_version(tmp_path) == 1 and cg.version == 1
    path = cg.container_path("u1", "c1")
    assert path == "/skiff/podu1/c1"
    assert cg.directories(path) == [tmp_path / c / "skiff/podu1/c1" for c in ("cpu", "cpuacct", "memory", "pids",
                                                                               "unified")]  # fmt: skip
    mem = tmp_path / "memory/skiff/podu1/c1"
    write(tmp_path / "cpuacct/skiff/podu1/c1/cpuacct.usage", "123456789\n")
    write(mem / "memory.usage_in_bytes", "10000000\n")
    write(mem / "memory.stat", "cache 5\ntotal_inactive_file 4000000\n")
    write(mem / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    usage = cg.usage(path)
    assert (usage.cpu_usage_ns, usage.memory_usage_bytes) == (123456789, 10**7)
    assert usage.memory_working_set_bytes == 6 * 10**6
    assert cg.oom_kills(path) == 2
    for d in cg.directories(path):
        d.mkdir(parents=True, exist_ok=True)
    for f in mem.iterdir():
        f.unlink()
    (tmp_path / "cpuacct/skiff/podu1/c1/cpuacct.usage").unlink()
    assert cg.exists(cg.pod_path("u1"))
    cg.remove(cg.pod_path("u1"))
    assert not cg.exists(cg.pod_path("u1")) and (tmp_path / "memory/skiff").is_dir()


def test_v2_paths_and_usage(tmp_path: Path) -> None:
    write(tmp_path / "cgroup.controllers", "cpu memory pids\n")
    cg = Cgroups("/skiff/", root=tmp_path)
    assert cg.version == 2
    path = cg.container_path("u2", "c2")
    assert cg.directories(path) == [tmp_path / "skiff/podu2/c2"]
    d = tmp_path / "skiff/podu2/c2"
    write(d / "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    write(d / "memory.current", "8192\n")
    write(d / "memory.stat", "anon 4096\ninactive_file 1024\n")
    write(d / "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    usage = cg.usage(path)
    assert (usage.cpu_usage_ns, usage.memory_working_set_bytes) == (1_500_000, 7168)
    assert cg.oom_kills(path) == 1


def test_missing_cgroup_reads_as_zero(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    cg = Cgroups(root=tmp_path)
    usage = cg.usage(cg.pod_path("gone"))
    assert (usage.cpu_usage_ns, usage.memory_working_set_bytes, cg.oom_kills(cg.pod_path("gone"))) == (0, 0, 0)
