"""A report as text a replica can always send: cut when huge, substituted when unencodable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.replica import sendable


def test_cut_keeps_short_text_and_the_head_and_tail_of_long_text() -> None:
    assert sendable.cut("abc", 10) == "abc"
    text = sendable.cut("a" * 50 + "b" * 50, 20)
    assert text.startswith("a" * 10)
    assert text.endswith("b" * 10)
    assert "80 characters cut by pytest-reuse-env" in text


def report(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "$report_type": "TestReport",
        "nodeid": "t.py::test",
        "location": ["t.py", 1, "test"],
        "keywords": {"test": 1},
        "outcome": "passed",
        "when": "call",
        "duration": 0.1,
        "start": 0.0,
        "stop": 0.1,
        "longrepr": None,
        "sections": [],
        "user_properties": [],
    }
    data.update(extra)
    return data


def test_a_small_report_is_encoded_unchanged() -> None:
    data = report(sections=[["Captured stdout call", "hello\n"]])
    assert json.loads(sendable.bounded(data, "")) == data


def test_a_huge_section_is_cut_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_SECTION_CHARS", 100)
    monkeypatch.setattr(sendable, "MAX_REPORT_CHARS", 10_000)
    data = report(sections=[["Captured stdout call", "x" * 5000]])
    decoded = json.loads(sendable.bounded(data, ""))
    assert decoded["outcome"] == "passed"
    content = decoded["sections"][0][1]
    assert len(content) < 300
    assert "4900 characters cut" in content


def test_a_report_still_too_big_gets_its_failure_as_cut_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol, "MAX_SECTION_CHARS", 100)
    monkeypatch.setattr(sendable, "MAX_REPORT_CHARS", 2_000)
    lines = ["E   line"] * 1000  # many short lines: no single string is long
    data = report(outcome="failed", longrepr={"reprtraceback": {"lines": lines}})
    encoded = sendable.bounded(data, "\n".join(lines))
    decoded = json.loads(encoded)
    assert isinstance(decoded["longrepr"], str)
    assert "characters cut" in decoded["longrepr"]
    assert len(encoded) < 2_000


def test_an_unencodable_report_fails_its_first_phase_and_keeps_later_outcomes() -> None:
    loop: list[Any] = []
    loop.append(loop)
    data = report(user_properties=[("loop", loop)], sections=[["Captured stdout call", "hi"]])
    with pytest.raises(ValueError, match="Circular"):
        sendable.bounded(data, "")
    first = json.loads(sendable.substitute(data, "why", first=True, longreprtext=""))
    assert (first["outcome"], first["longrepr"], first["user_properties"]) == ("failed", "why", [])
    assert first["sections"] == [["Captured stdout call", "hi"]]
    later = json.loads(sendable.substitute(data, "why", first=False, longreprtext=""))
    assert (later["outcome"], later["longrepr"]) == ("passed", None)
