"""Quiet passes held back and sent together (replica/held.py), and read back after a crash."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_reuse_env import protocol
from pytest_reuse_env.replica import procfs
from pytest_reuse_env.replica.held import BATCH, FLUSH_SECONDS, MIN_QUEUED, HeldResults


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def payload(n: int) -> str:
    text: str = protocol.test_done(f"test_a.py::test[{n}]", "", False, [[protocol.PASSED]])[1]
    return text


def texts(message: protocol.Message) -> list[str]:
    """A TESTS message's payloads, in order."""
    assert message[0] == protocol.TESTS
    return [text for _, text in protocol.tests_entries(message[1])]


def held_texts(path: Path) -> list[str]:
    """The payloads in a held file (``protocol.read_held``), without their end times."""
    with path.open("rb") as file:
        return [text for _, text in protocol.read_held(file)]


def make(tmp_path: Path) -> tuple[HeldResults, list[protocol.Message], Clock, Path]:
    sent: list[protocol.Message] = []
    clock = Clock()
    path = tmp_path / "replica-r0.log.held"
    return HeldResults(str(path), sent.append, clock), sent, clock, path


def test_held_passes_go_out_together_in_order_and_leave_the_file_empty(tmp_path: Path) -> None:
    results, sent, _, path = make(tmp_path)
    for n in range(3):
        assert results.hold(payload(n), queued=MIN_QUEUED)
    assert sent == []
    assert held_texts(path) == [payload(n) for n in range(3)]
    with path.open("rb") as file:
        assert [ended for ended, _ in protocol.read_held(file)] == [100.0] * 3
    results.flush()
    assert [texts(m) for m in sent] == [[payload(n) for n in range(3)]]
    assert held_texts(path) == []
    results.flush()
    assert len(sent) == 1, "nothing held: nothing sent"


def test_a_full_batch_is_sent_at_once(tmp_path: Path) -> None:
    results, sent, _, path = make(tmp_path)
    for n in range(BATCH):
        assert results.hold(payload(n), queued=100)
    assert [texts(m) for m in sent] == [[payload(n) for n in range(BATCH)]]
    assert path.read_text() == ""


def test_the_oldest_waits_no_longer_than_flush_seconds(tmp_path: Path) -> None:
    results, sent, clock, _ = make(tmp_path)
    start = clock.now
    results.hold(payload(0), queued=100)
    clock.now = start + FLUSH_SECONDS * 0.5
    results.flush_stale()
    assert sent == []
    results.hold(payload(1), queued=100)
    assert sent == []
    clock.now = start + FLUSH_SECONDS * 1.01
    results.flush_stale()  # the watchdog, while a long test runs
    assert [texts(m) for m in sent] == [[payload(0), payload(1)]]
    assert [ended for ended, _ in protocol.tests_entries(sent[0][1])] == [
        start,
        start + FLUSH_SECONDS * 0.5,
    ], "each with when its test ended"
    results.hold(payload(2), queued=100)
    clock.now += FLUSH_SECONDS * 1.01
    results.hold(payload(3), queued=100)  # the next pass sends them when the first is old
    assert texts(sent[-1]) == [payload(2), payload(3)]


def test_nothing_is_held_without_a_file_or_with_a_short_queue(tmp_path: Path) -> None:
    sent: list[protocol.Message] = []
    assert not HeldResults(None, sent.append).hold(payload(0), queued=100)
    results, sent, _, path = make(tmp_path)
    assert not results.hold(payload(0), queued=MIN_QUEUED - 1), "the controller waits for it"
    assert sent == []
    assert path.read_text() == ""


def test_a_file_that_cannot_be_written_holds_nothing_more(tmp_path: Path) -> None:
    results, sent, _, _ = make(tmp_path)
    fd = results._fd
    assert fd is not None
    assert fd >= procfs._kept_from(), "kept above what tests open"
    os.close(fd)  # a test closed it
    assert not results.hold(payload(0), queued=100)
    assert not results.hold(payload(1), queued=100)
    assert sent == []


def test_reading_back_leaves_out_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "x.held"
    path.write_text(f"1.5 {payload(0)}\n2.5 {payload(1)[:10]}")
    with path.open("rb") as file:
        assert protocol.read_held(file) == [(1.5, payload(0))]


def test_dropped_passes_are_neither_sent_nor_left_in_the_file(tmp_path: Path) -> None:
    # A persistent replica's client went away: what it held was that client's.
    results, sent, _, path = make(tmp_path)
    for n in range(3):
        assert results.hold(payload(n), queued=MIN_QUEUED)
    results.drop()
    assert held_texts(path) == []
    results.flush()
    assert sent == []
    assert results.hold(payload(3), queued=MIN_QUEUED), "it holds again for the next client"
    results.flush()
    assert [texts(m) for m in sent] == [[payload(3)]]
