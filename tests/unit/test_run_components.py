"""run_components: how one process's components end, and what a failure makes of the exit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from skiff.cli.components import ComponentFailed, run_components


async def _waits(_client: Any, stop: asyncio.Event) -> None:
    await stop.wait()


async def _raises_after_setting_stop(_client: Any, stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.sleep(0.01)  # e.g. cleaning up, which then fails
    raise RuntimeError("boom")


async def _raises(_client: Any, _stop: asyncio.Event) -> None:
    raise RuntimeError("broken")


def test_a_component_that_sets_stop_and_then_raises_still_fails_the_process() -> None:
    async def main() -> None:
        await run_components(None, asyncio.Event(), {"a": _waits, "b": _raises_after_setting_stop})  # type: ignore[arg-type]

    with pytest.raises(ComponentFailed, match="b failed: boom"):
        asyncio.run(main())


def test_a_failing_component_stops_the_others() -> None:
    async def main() -> None:
        await run_components(None, asyncio.Event(), {"a": _waits, "b": _raises})  # type: ignore[arg-type]

    with pytest.raises(ComponentFailed, match="b failed: broken"):
        asyncio.run(main())


def test_stop_ends_every_component_cleanly() -> None:
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, stop.set)
        await run_components(None, stop, {"a": _waits, "b": _waits})  # type: ignore[arg-type]

    asyncio.run(main())
