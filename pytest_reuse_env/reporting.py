"""Reports and warnings the controller makes up or rebuilds from a replica's words."""

from __future__ import annotations

import importlib
import time
import warnings
from typing import final

import pytest

from pytest_reuse_env import protocol


@final
class ReuseEnvWarning(pytest.PytestWarning):
    """Something about a replica the user should know, that is not a test's outcome."""


def synthetic_report(
    item: pytest.Item, when: str, outcome: str, message: str | None
) -> pytest.TestReport:
    """A report for a phase no replica reported: a crash, a test no replica could run."""
    now = time.time()
    return pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords={name: 1 for name in item.keywords},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr=message,
        when=when,  # type: ignore[arg-type]
        sections=[],
        duration=0.0,
        start=now,
        stop=now,
        user_properties=[],
    )


def warning_from_payload(payload: protocol.WarningPayload) -> warnings.WarningMessage:
    """Rebuild a replica's warning so pytest's warnings summary shows it as its own."""
    category: type[Warning] = UserWarning
    try:
        found = importlib.import_module(payload["category_module"])
        for part in payload["category_name"].split("."):
            found = getattr(found, part)
        if isinstance(found, type) and issubclass(found, Warning):
            category = found
    except (ImportError, AttributeError):
        pass
    return warnings.WarningMessage(
        payload["message"], category, payload["filename"], payload["lineno"]
    )
