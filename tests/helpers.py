"""What the suite's end-to-end tests share: how an inner pytest run is started."""

from __future__ import annotations

from typing import Final

import pytest

#: Plugins that would only add noise to an inner run are off; the plugin under test is on.
#: (pytest-randomly would reorder and reseed every inner run; test_compat.py turns it on.)
NOISE_OFF: Final = (
    "-p",
    "no:asyncio",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:anyio",
    "-p",
    "no:randomly",
)
PLUGIN_ARGS: Final = (*NOISE_OFF, "-p", "reuse_env")
#: Bound of every inner run: a hang fails the test instead of the whole suite.
RUN_TIMEOUT: Final = 60.0


def run(pytester: pytest.Pytester, *args: str, timeout: float = RUN_TIMEOUT) -> pytest.RunResult:
    """An inner pytest in a subprocess (real replicas are processes), with the plugin on."""
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *args, timeout=timeout)
