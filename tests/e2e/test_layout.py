"""End to end: a run that routes nothing loads neither side of the plugin; a run-scoped run
does not load the registry's lock."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run

RECORDER = """
import json, sys

def pytest_unconfigure(config):
    names = sorted(n for n in sys.modules if n.startswith(("pytest_reuse_env", "filelock")))
    with open("loaded.json", "w") as f:
        json.dump(names, f)
"""


def loaded(pytester: pytest.Pytester) -> list[str]:
    names: list[str] = json.loads((pytester.path / "loaded.json").read_text())
    return names


def test_a_run_that_routes_nothing_imports_neither_side(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORDER)
    pytester.makepyfile("def test_plain():\n    assert True\n")
    run(pytester).assert_outcomes(passed=1)
    names = loaded(pytester)
    assert "pytest_reuse_env.plugin" in names
    assert [
        n
        for n in names
        if n.startswith(("pytest_reuse_env.controller", "pytest_reuse_env.replica"))
    ] == []


def test_a_routed_test_loads_the_controller_but_not_the_registry_lock(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(RECORDER)
    pytester.makeini("[pytest]\nreuse_scope = run\n")
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.reuse\ndef test_routed():\n    assert True\n"
    )
    run(pytester).assert_outcomes(passed=1)
    names = loaded(pytester)
    assert "pytest_reuse_env.controller.session" in names
    # Run-scoped replicas never open the registry: its lock's library is not imported.
    assert "filelock" not in names
