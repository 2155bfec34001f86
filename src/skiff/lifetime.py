"""Child processes that do not outlive skiff: the kernel's parent-death signal.

`skiff server` starts helpers (the controller manager, the scheduler, the
image registry). If the server is SIGKILLed it cannot stop them, and a
leftover registry would hold its port against the next start. Passed as
`preexec_fn`, `die_with_parent` asks Linux to send the child SIGTERM when
the thread that started it exits.
"""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
