"""Async tests run at once on one event loop inside a replica: the batch, one task's run and
its fixtures, where each task's output goes, and which queued tests run as a batch."""
