"""Benchmarks of pytest-reuse-env against plain pytest and its peers.

``python -m benchmarks`` (or ``python benchmarks/run.py``) from the repository root. Each scenario
writes its own test suite to a temporary directory, runs every contender there as a subprocess
(``python -m pytest -p no:cacheprovider ...``) several rounds, interleaved, checks that all
contenders ran the same tests with the same outcomes, and reports medians and ratios against
plain pytest, as a table and as JSON.

Modules: ``suites`` (the generated test files), ``probe`` (what of the plugin can be measured),
``scenarios`` (scenarios, contenders and their verdicts), ``measure`` (one timed subprocess, its
junitxml, its fixture-setup count, its memory), ``report`` (table and JSON), ``run`` (the CLI).
"""
