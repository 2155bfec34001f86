"""What the runtime reports from its files and /proc alone (no `runc list`): it holds across runtimes.

An agent that restarts gets a new `Runtime` on the same state directory; what it reports must be
what runc would say -- created, running, exited with the container's code -- for containers an
earlier runtime made through its shim server, which may be gone by then (the shims are not its
children). A container that exits and another in the same pod keep their own states.
"""

from __future__ import annotations

from pathlib import Path

from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.types import ContainerConfig, ContainerState
from tests.node.conftest import sandbox_config


def sibling(runtime: Runtime) -> Runtime:
    """A second Runtime on the same state dir, as after an agent restart."""
    return Runtime(state_dir=runtime.state_dir, network=runtime.network, cgroup_parent=runtime.cgroups.parent,
                   netns_prefix=runtime.sandboxes.netns_prefix)  # fmt: skip


async def test_states_survive_a_new_runtime_and_the_end_of_the_shim_server(
    runtime: Runtime, busybox_rootfs: Path
) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config())
    sleeper = await runtime.create_container(sandbox, ContainerConfig(name="sleeper", args=["sleep", "1000"]),
                                             busybox_rootfs)  # fmt: skip
    waiting = await runtime.create_container(sandbox, ContainerConfig(name="waiting", args=["sleep", "1000"]),
                                             busybox_rootfs)  # fmt: skip
    await runtime.start(sleeper)
    runtime.runc.shims.close()  # the shim server ends; the shims it forked do not

    later = sibling(runtime)
    states = {info.name: info.state for info in await later.list(sandbox.uid)}
    assert states == {"sleeper": ContainerState.RUNNING, "waiting": ContainerState.CREATED}
    assert await later.list("some-other-pod") == []

    await later.start(waiting)  # started by the new runtime: the first one is told by runc
    assert (await runtime.status(waiting)).state == ContainerState.RUNNING
    stopped = await later.stop(sleeper, grace_period=0)  # SIGKILL
    assert (stopped.state, stopped.exit_code) == (ContainerState.EXITED, 137)
    assert (await runtime.status(sleeper)).exit_code == 137
    assert (await runtime.status(waiting)).state == ContainerState.RUNNING
