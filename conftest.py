"""Shared test setup for pytest-reuse-env's own suite."""

from __future__ import annotations

pytest_plugins = ["pytester"]
