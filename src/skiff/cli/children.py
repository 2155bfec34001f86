"""The controller manager and the scheduler as child processes of `skiff server`.

Python runs one thread of bytecode at a time per process, so a server that
also runs its controllers and scheduler spends one core on all three: every
event the controllers watch is encoded, encrypted, decrypted and decoded by
that same core. Kubernetes runs them as separate processes; `skiff server`
does too (unless `--single-process`), starting `skiff controller-manager`
and `skiff scheduler` against its admin kubeconfig once it is ready, and
supervising them like the in-process components: one ending on its own
stops the cluster with an error; SIGTERM to the server stops them first.

The children die with the server even when it is SIGKILLed (the kernel's
parent-death signal), and sit in their own process group so that a Ctrl-C
in the terminal reaches the server alone, which then stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from skiff.lifetime import die_with_parent

log = logging.getLogger("skiff")

STOP_TIMEOUT = 15.0  # seconds a child gets to stop after SIGTERM before it is killed


@dataclass(frozen=True)
class ChildSpec:
    name: str  # "controller-manager", "scheduler"
    argv: tuple[str, ...]  # arguments after `skiff`
    env: Mapping[str, str] = field(default_factory=dict)  # added to the server's environment


def skiff_command(args: Sequence[str]) -> list[str]:
    """This same skiff, run by this same Python (no reliance on PATH or an installed script)."""
    return [sys.executable, "-m", "skiff.cli.main", *args]


class ChildFailed(Exception):
    """A child component exited before it was asked to stop."""


async def supervise(children: Sequence[ChildSpec], stop: asyncio.Event) -> None:
    """Run the children until `stop` is set or one of them exits; then stop the rest.

    Raises `ChildFailed` when a child exited on its own.
    """
    procs: dict[str, asyncio.subprocess.Process] = {}
    try:
        for child in children:
            procs[child.name] = await asyncio.create_subprocess_exec(
                *skiff_command(child.argv),
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **child.env} if child.env else None,
                preexec_fn=die_with_parent,
                process_group=0,
            )
            log.info("started %s (pid %d)", child.name, procs[child.name].pid)
        waits = {asyncio.create_task(p.wait(), name=name): name for name, p in procs.items()}
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*waits, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        failed = [f"{waits[t]} exited with code {t.result()}" for t in done if t is not stopper]
        if failed and not stop.is_set():
            for line in failed:
                log.error("%s; stopping", line)
            raise ChildFailed("; ".join(failed))
    finally:
        stop.set()
        await asyncio.gather(*(_stop(name, p) for name, p in procs.items()))


async def _stop(name: str, proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; killing it", name, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    log.info("%s stopped (exit code %s)", name, proc.returncode)
