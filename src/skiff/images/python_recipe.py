"""The built-in `python` image (not written yet: its recipe raises until it is)."""

from __future__ import annotations

from skiff.images.errors import BuildError
from skiff.images.layout import Draft, Layout
from skiff.images.tools import Progress


async def python_recipe(layout: Layout, draft: Draft, progress: Progress) -> None:
    raise BuildError("the python recipe is not available yet")
