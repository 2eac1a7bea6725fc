"""What recording a warm fixture's dependences costs its setup (issue "Warm through edits": at
most 5 % on a setup that runs 1 s of Python).

``python -m benchmarks.recording``: in one process, a workload of project code (a package in a
temporary directory) runs as a fixture's setup does in a replica, called by pytest's
``call_fixture_func`` below 60 frames of stack, with the replica's ``ModuleGraph`` installed and
a recording active, and without (plain pytest), alternately, ``--rounds`` times each; the
minimum and the median of each are compared. Workloads, each calibrated to about 1 s:

- ``pure``: pure-Python project code, no import in the loop;
- ``mixed``: the same, plus 10,000 lazy imports of a project module and 10,000 of the standard
  library (an ``import`` statement inside a function, executed at each call);
- ``lazy_project`` and ``lazy_stdlib``: nothing but such imports in the loop, the worst case,
  to give the cost of one import.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _pytest.fixtures import call_fixture_func

from pytest_reuse_env.replica.modgraph import ModuleGraph
from pytest_reuse_env.replica.reload import Reloader

#: Frames below the fixture's function, about what pytest's own stack holds in a replica.
DEPTH = 60

CODE = """
def step(x):
    return (x * 1103515245 + 12345) % 2147483648


def pure(n):
    x = 1
    for _ in range(n):
        x = step(x)
    return x


def lazy_project(n):
    x = 1
    for _ in range(n):
        from benchpkg.helpers import other

        x = other(x)
    return x


def lazy_stdlib(n):
    x = 1
    for _ in range(n):
        import json  # noqa: F401

        x = (x * 1103515245 + 12345) % 2147483648
    return x


def mixed(n):
    return pure(n) + lazy_project(10_000) + lazy_stdlib(10_000)
"""


def _deep(depth: int, function: Callable[[int], int], n: int) -> Any:
    if depth:
        return _deep(depth - 1, function, n)
    return call_fixture_func(function, None, {"n": n})  # type: ignore[arg-type]


def _timed(function: Callable[[int], int], n: int) -> float:
    started = time.perf_counter()
    _deep(DEPTH, function, n)
    return time.perf_counter() - started


def _calibrated(function: Callable[[int], int]) -> int:
    """The ``n`` for which the workload runs about 1 s without recording."""
    n = 1000
    while (seconds := _timed(function, n)) < 0.2:
        n *= 2
    return int(n / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as root:
        package = Path(root) / "benchpkg"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "helpers.py").write_text("def other(x):\n    return x + 1\n")
        (package / "work.py").write_text(textwrap.dedent(CODE))
        sys.path.insert(0, root)
        from benchpkg import work  # type: ignore[import-not-found]

        graph = Reloader().graph  # as in a replica: with pytest's frames as floors
        assert isinstance(graph, ModuleGraph)
        graph.observe()
        for name in ("pure", "mixed", "lazy_project", "lazy_stdlib"):
            function = getattr(work, name)
            n = _calibrated(function if name != "mixed" else work.pure)
            plain: list[float] = []
            recorded: list[float] = []
            for _ in range(rounds):
                plain.append(_timed(function, n))
                graph.install()
                recording: set[str] = set()
                graph.recordings.append(recording)
                try:
                    recorded.append(_timed(function, n))
                finally:
                    graph.recordings.remove(recording)
                    graph.uninstall()
            extra = min(recorded) - min(plain)
            imports = {"lazy_project": n, "lazy_stdlib": n}.get(name)
            per_import = f", {extra / imports * 1e6:.2f} us an import" if imports else ""
            print(
                f"{name:13} plain {min(plain):.3f} s (median {statistics.median(plain):.3f}), "
                f"recorded {min(recorded):.3f} s (median {statistics.median(recorded):.3f}): "
                f"{100 * (min(recorded) / min(plain) - 1):+.1f} % "
                f"({100 * (statistics.median(recorded) / statistics.median(plain) - 1):+.1f} % "
                f"by medians){per_import}"
            )


if __name__ == "__main__":
    main()
