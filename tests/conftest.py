"""Suite-wide hooks: a terminated test run still cleans up after itself.

A session ended by SIGTERM (a CI job's time limit, `timeout`, a developer's kill) would stop
at once, without the fixtures' teardown: servers, registries and node agents left running,
containers, network namespaces, bridges and NAT rules left on the host, where they break the
next run (a taken bridge or port, a pod CIDR routed twice). SIGTERM is turned into
KeyboardInterrupt, which pytest answers by tearing every fixture down before it exits.
"""

from __future__ import annotations

import signal
from types import FrameType

import pytest


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the run, teardown or not
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
