"""A test report as the text a replica can always send: never too big, never unencodable.

A report that cannot travel would lose its test (or its connection): a test that prints 70 MB,
an assertion message of 80 MB, a ``record_property`` value that refers to itself. Here:

- every string in the report longer than ``protocol.MAX_SECTION_CHARS`` (a captured section, a
  failure's text) keeps its head and tail with a note of how much was cut between them; a
  report still larger than ``MAX_REPORT_CHARS`` (many huge sections, a traceback of millions of
  short lines) gets its failure as plain text and its sections cut further;
- a report that cannot be encoded at all becomes a failed report that says why, with what could
  be kept (its sections); later phases of the same test keep their outcome.

Runs inside a replica; imports the standard library and the package's ``protocol`` only.
"""

from __future__ import annotations

from typing import Any, Final

from pytest_reuse_env import protocol

#: The most a report may weigh once encoded: well under a socket channel's frame limit.
MAX_REPORT_CHARS: Final = 4 * protocol.MAX_SECTION_CHARS
#: What a report that could not be encoded keeps of the original (all builtins, all small).
_SAFE_KEYS: Final[tuple[str, ...]] = (
    "$report_type",
    "nodeid",
    "location",
    "keywords",
    "when",
    "duration",
    "start",
    "stop",
    "outcome",
)


def cut(text: str, limit: int | None = None) -> str:
    """``text`` itself, or its head and tail with a note in place of the middle (``limit``:
    ``protocol.MAX_SECTION_CHARS`` by default)."""
    if limit is None:
        limit = protocol.MAX_SECTION_CHARS
    if len(text) <= limit:
        return text
    half = limit // 2
    note = (
        f"\n[... {len(text) - 2 * half} characters cut by pytest-reuse-env: a report carries at"
        f" most {limit} per captured section or failure text ...]\n"
    )
    return text[:half] + note + text[len(text) - half :]


def _cut_strings(value: Any, limit: int) -> Any:
    """``value`` (JSON-ready builtins) with every long string cut."""
    if isinstance(value, str):
        return cut(value, limit)
    if isinstance(value, dict):
        return {key: _cut_strings(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_cut_strings(item, limit) for item in value]
    return value


def bounded(data: dict[str, Any], longreprtext: str) -> str:
    """The encoded report, cut to fit (see the module's docstring); raises what json raises
    when the report cannot be encoded at all."""
    encoded = protocol.encode_report(data)
    if len(encoded) <= protocol.MAX_SECTION_CHARS:
        return encoded  # nearly every report: no walk over its contents
    data = _cut_strings(data, protocol.MAX_SECTION_CHARS)
    encoded = protocol.encode_report(data)
    if len(encoded) <= MAX_REPORT_CHARS:
        return encoded
    if isinstance(data.get("longrepr"), dict):  # a traceback of very many lines: its text
        data["longrepr"] = cut(longreprtext)
    sections = data.get("sections") or []
    share = max(1024, MAX_REPORT_CHARS // 2 // max(1, len(sections)))
    data["sections"] = [(name, cut(content, share)) for name, content in sections]
    return protocol.encode_report(data)


def substitute(data: dict[str, Any], reason: str, *, first: bool, longreprtext: str) -> str:
    """A report that could not be encoded, as one that can: the test's first such phase fails
    with ``reason``; later ones keep their outcome. Sections that are text are kept."""
    safe: dict[str, Any] = {key: data[key] for key in _SAFE_KEYS if key in data}
    safe["sections"] = [
        (section[0], cut(section[1]))
        for section in data.get("sections") or []
        if isinstance(section, list | tuple)
        and len(section) == 2
        and all(isinstance(part, str) for part in section)
    ]
    safe["user_properties"] = []
    if first:
        safe["outcome"] = "failed"
        safe["longrepr"] = reason
    else:
        safe["longrepr"] = cut(longreprtext) if safe.get("outcome") == "failed" else None
    for key in (protocol.REPORT_REPLICA, protocol.REPORT_WARM, protocol.REPORT_LEASE):
        if key in data:
            safe[key] = data[key]
    return protocol.encode_report(safe)
