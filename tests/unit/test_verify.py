"""The cold verification of a warm failure reads a fresh replica's quiet passes however they
travel: one TEST each, or several together in one TESTS (replica/held.py)."""

from __future__ import annotations

from typing import Any

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.verify import ColdVerifier, WarmFailure
from pytest_reuse_env.policy import ReusePolicy

NODEID = "t.py::test_a"


def quiet_pass() -> str:
    events = [[protocol.PASSED, when, 0.001, 1.0, 1.001] for when in ("setup", "call", "teardown")]
    text: str = protocol.test_done(NODEID, "", False, events)[1]
    return text


def failure() -> WarmFailure:
    return WarmFailure(NODEID, "default", ReusePolicy(), "g-1", [])


def test_a_quiet_pass_sent_together_is_a_cold_pass() -> None:
    verifier = ColdVerifier(launcher=None)  # type: ignore[arg-type]
    replica: Any = None
    alone, together = failure(), failure()
    verifier.table[protocol.TEST](replica, alone, quiet_pass())
    verifier.table[protocol.TESTS](
        replica, together, protocol.tests(protocol.held_line(1.0, quiet_pass()))[1]
    )
    assert alone.cold_outcome == together.cold_outcome == "passed"
