"""Run host commands (ip, mount, runc, CNI plugins) as asyncio subprocesses, never blocking the loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence


class CommandError(Exception):
    """A command exited non-zero; `stderr` says why."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        text = (stderr or stdout).decode(errors="replace").strip()
        super().__init__(f"{argv[0]} {' '.join(argv[1:3])}... exited {returncode}: {text}")


async def run(
    *argv: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    time_limit: float = 60.0,
) -> tuple[int, bytes, bytes]:
    """Run `argv`, feed `stdin`, return (returncode, stdout, stderr); raise CommandError if `check`."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), time_limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    code = proc.returncode if proc.returncode is not None else -1
    if check and code != 0:
        raise CommandError(argv, code, out, err)
    return code, out, err


def host_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}
