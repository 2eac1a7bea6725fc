"""A replica's test reports and warnings as the entries of its TEST messages.

A report that passed quietly travels compact (``protocol.PASSED``: the check is inline in
``ReplicaSession.pytest_runtest_logreport``, against :data:`PLAIN_REPORT_KEYS`, as it runs for
every phase of every test); any other travels in full: serialized by pytest's hook, stamped with
the replica, warmth and lease, with other plugins' per-run extras, as text ``sendable.py`` keeps
sendable. A warning recorded while a test runs travels as a ``protocol.WARNING`` entry.

Runs inside a replica, on its main thread (``ReplicaSession``'s hooks call it); imports the
standard library, pytest and the replica side only.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Final

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.replica import sendable

if TYPE_CHECKING:
    from pytest_reuse_env.replica.session import ReplicaSession

#: A TestReport's own attributes: a report with any other (a plugin's) travels in full.
PLAIN_REPORT_KEYS: Final = frozenset(
    pytest.TestReport("a.py::t", ("a.py", 0, "t"), {}, "passed", None, "call").__dict__
)


def full_report(replica: ReplicaSession, config: pytest.Config, report: pytest.TestReport) -> str:
    """The report as text that can always be sent (see ``sendable.py``): a report that
    cannot be encoded fails its test with the reason instead of ending the session."""
    data: dict[str, Any] = {}
    try:
        data = config.hook.pytest_report_to_serializable(config=config, report=report)
        stamp(replica, data)
        data.update(replica.perrun.report_extras())
        return sendable.bounded(data, report.longreprtext)
    except Exception as exc:  # a value json cannot encode (a list that contains itself)
        reason = (
            f"the {report.when} report of {report.nodeid} could not be sent from replica "
            f"{replica.replica_id}: {type(exc).__name__}: {exc} (a user_properties value or "
            "a report attribute that cannot be serialized?)"
        )
    first = report.nodeid not in replica.unsendable
    replica.unsendable.add(report.nodeid)
    if not data:
        data = {
            "$report_type": "TestReport",
            "nodeid": report.nodeid,
            "location": report.location,
            "keywords": {},
            "when": report.when,
            "duration": report.duration,
            "start": report.start,
            "stop": report.stop,
            "outcome": report.outcome,
        }
        stamp(replica, data)
    return sendable.substitute(data, reason, first=first, longreprtext=report.longreprtext)


def stamp(replica: ReplicaSession, data: dict[str, Any]) -> None:
    """Which replica sent the report, whether it was warm, and the lease it ran in."""
    data[protocol.REPORT_REPLICA] = replica.replica_id
    data[protocol.REPORT_WARM] = replica.tests_run > 0
    data[protocol.REPORT_LEASE] = replica.test_lease


def warning_entry(
    warning_message: warnings.WarningMessage,
    nodeid: str,
    location: tuple[str, int, str] | None,
    lease: str,
) -> list[Any]:
    """A warning a test raised, as the ``protocol.WARNING`` entry of its TEST message."""
    category = warning_message.category
    _, payload = protocol.warning(
        message=str(warning_message.message),
        category_module=category.__module__,
        category_name=category.__qualname__,
        filename=str(warning_message.filename),
        lineno=int(warning_message.lineno),
        nodeid=nodeid,
        location=location,
        lease=lease,
    )
    return [protocol.WARNING, payload]
