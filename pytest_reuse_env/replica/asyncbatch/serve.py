"""Concurrent async batches from a replica's queue: which tests at its head run together, and
running them with ``batch.run_concurrently`` between the replica's ordinary tests.

Runs inside a replica, on its main thread, called by ``ReplicaSession.serve`` with the session's
state (its queue, leak watch, lease and sends); imports the standard library, pytest and the
replica side only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.replica.abort import ClientGone, not_running
from pytest_reuse_env.replica.asyncbatch import batch as async_batch
from pytest_reuse_env.replica.asyncbatch.eligible import is_async_item

if TYPE_CHECKING:
    from pytest_reuse_env.replica.session import ReplicaSession


def next_batch(replica: ReplicaSession) -> list[pytest.Item]:
    """The async tests at the head of the queue, if concurrency allows running them at once.

    Sync tests (and async ones that cannot share a loop, like users of capfd) break the
    batch: they run one at a time afterwards, never overlapping it.
    """
    if replica.start["policy"]["concurrency"] < 2:
        return []
    batch = []
    for nodeid in replica.pending:
        item = replica.items.get(nodeid)
        if item is None or not is_async_item(item):
            break
        batch.append(item)
    return batch if len(batch) >= 2 else []


def run_batch(replica: ReplicaSession, session: pytest.Session, batch: list[pytest.Item]) -> None:
    """Run ``batch`` (taken off the head of the queue) at once, as ordinary tests would be run:
    collectors it does not share torn down first, leak checks over the whole batch."""
    replica.leaks.forget_baseline()
    for _ in batch:
        replica.pending.popleft()
    replica.test_lease = replica.lease
    replica.running_nodeids = [item.nodeid for item in batch]
    replica.teardown_to(session, batch[0])
    for item in batch:
        item._report_sections = []
        item.user_properties = []
        replica.begin_test(session, item)
    before = replica.leaks.batch_started()

    def finished(item: pytest.Item) -> None:
        replica.tests_run += 1

    try:
        replica.running = True
        async_batch.run_concurrently(
            session,
            batch,
            replica.start["policy"]["concurrency"],
            timeout=replica.start["policy"]["timeout"],
            on_started=lambda item: replica.send(protocol.started(item.nodeid, replica.test_lease)),
            on_finished=finished,
            on_set_up=replica.leaks.batch_set_up,
        )
    except ClientGone:
        pass  # the client went away: the rest of the batch is abandoned
    finally:
        not_running(replica)
    replica.running_nodeids = []
    replica.leaks.batch_finished(before, batch)
    replica.restore_cwd()
    replica.leaks.after_test(batch[-1].nodeid, replica.tests_run, replica.pending)
