"""Async tests run at once on one event loop inside a replica: the batch, one task's run and
its fixtures, and where each task's output goes."""
