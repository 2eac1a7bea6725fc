"""What the suite's end-to-end tests share: how an inner pytest run is started."""

from __future__ import annotations

from typing import Final

import pytest

#: Plugins the test extra installs for the compatibility matrix (tests/e2e/test_compat_*.py):
#: off in every other inner run, so merely having them installed changes nothing there.
COMPAT_OFF: Final = (
    *("-p", "no:syrupy", "-p", "no:benchmark"),
    *("-p", "no:pytest_order", "-p", "no:dependency", "-p", "no:randomly"),
)
#: Plugins that would only add noise to an inner run are off; the plugin under test is on.
BASE_NOISE_OFF: Final = (
    *("-p", "no:asyncio", "-p", "no:hypothesispytest", "-p", "no:anyio"),
    *("-p", "no:randomly"),
)
NOISE_OFF: Final = (*BASE_NOISE_OFF, *COMPAT_OFF)
PLUGIN_ARGS: Final = (*NOISE_OFF, "-p", "reuse_env")
#: For the compatibility matrix: the other plugins on.
COMPAT_ARGS: Final = (*BASE_NOISE_OFF, "-p", "reuse_env")
#: Bound of every inner run: a hang fails the test instead of the whole suite.
RUN_TIMEOUT: Final = 60.0


def run(pytester: pytest.Pytester, *args: str, timeout: float = RUN_TIMEOUT) -> pytest.RunResult:
    """An inner pytest in a subprocess (real replicas are processes), with the plugin on."""
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *args, timeout=timeout)


def run_compat(
    pytester: pytest.Pytester, *args: str, timeout: float = RUN_TIMEOUT
) -> pytest.RunResult:
    """``run`` with the compatibility matrix's plugins (syrupy, pytest-benchmark, ...) on."""
    return pytester.runpytest_subprocess(*COMPAT_ARGS, *args, timeout=timeout)
