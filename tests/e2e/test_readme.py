"""README.rst stays true: its commands are the ones CI runs, and its examples work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import run

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.rst").read_text()


def literal_blocks() -> list[str]:
    """The indented blocks that follow a ``::`` line, dedented."""
    blocks = []
    for match in re.finditer(r"::\n\n((?:(?:    .*)?\n)+)", README):
        lines = match.group(1).rstrip().splitlines()
        blocks.append("\n".join(line[4:] for line in lines))
    return blocks


def code_block() -> str:
    """The first ``.. code-block:: python``, dedented."""
    lines = []
    for line in README.split(".. code-block:: python\n\n", 1)[1].splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines)


def test_the_two_commands_come_first_and_ci_runs_the_test_command() -> None:
    commands = [b for b in literal_blocks() if b.startswith("python3 -m venv")]
    assert len(commands) >= 2
    main_job, tests = commands[:2]
    assert "python -m pytest examples" in main_job
    assert main_job.count("python -m pytest examples") >= 2, "the second run shows warm reuse"
    assert "--reuse-stop" in main_job, "the demo leaves nothing running"
    assert tests.endswith("pip install -e '.[test]' && python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet --disable-pip-version-check -e '.[test]'" in ci
    # Wrappers (env, timeout) may stand before it; nothing may follow but a redirect.
    assert re.search(r"^[^#\n]*\bpython -m pytest(?: </dev/null)?(?: \|\|.*)?$", ci, re.M), (
        "CI must run exactly the README's test command"
    )


def test_the_ini_and_marker_example_runs(pytester: pytest.Pytester) -> None:
    ini = next(b for b in literal_blocks() if b.startswith("# pytest.ini"))
    code = code_block()
    pytester.makeini(
        ini.replace("# pytest.ini\n", "")
        + "\nreuse_scope = run\nasyncio_mode = auto\n"
        + "asyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makeconftest("def load_model():\n    return 'model'\n")
    source = code.replace("return load_model()", "return 'model'")
    source = source.replace(": ...", ":\n    assert model == 'model'")
    pytester.makepyfile(test_readme_example=source)
    try:
        result = run(
            pytester,
            "-q",
            "--reuse-report=report.json",
            timeout=120,
            plugins=("-p", "no:hypothesispytest", "-p", "no:randomly"),
        )
    finally:
        # test_c's ReusePolicy(...) has the default scope, global: its replica stays warm.
        run(pytester, "--reuse-stop", timeout=60, plugins=("-p", "no:hypothesispytest"))
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*= reuse =*", "default (*", "ml (*"])
    result.stdout.fnmatch_lines(["*reuse: 1 replica stays warm*"])
