"""Other plugins' per-run data from the replicas, merged into this run (``replica/perrun.py``).

A replica ends each run of other plugins' session state (syrupy's) and sends what they
produced with its lease's ``workeroutput`` (``WORKEROUTPUT``, see ``nodes.py``): a run-scoped
replica after its teardown, a persistent one when its lease ends (``END_LEASE``). Here it is
handed to the plugin as its xdist controller would hand it a worker's output, before that
plugin's ``pytest_sessionfinish`` runs.

A replica that ran tests and sent nothing (it crashed) leaves the run's data incomplete: then
syrupy's unused-snapshot check is turned off for the run, with a warning, rather than let it
report (or, with ``--snapshot-update``, delete) snapshots that were used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, final

import pytest

from pytest_reuse_env import protocol

if TYPE_CHECKING:
    from pytest_reuse_env.controller.replica import Replica


@final
class RunOutputs:
    """What the replicas of this run handed over at the end of their lease."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        #: Per-run plugins active here (their data is merged at the end).
        self.wanted = getattr(config, "_syrupy", None) is not None
        self.outputs: dict[str, dict[str, Any]] = {}

    def replica_event(self, replica: Replica, name: str, payload: Any) -> None:
        """Every message a replica sends: a lease's WORKEROUTPUT carries the run's data."""
        if name == protocol.WORKEROUTPUT and isinstance(payload, dict):
            data = payload.get(protocol.PERRUN_KEY)
            if data is not None:
                self.outputs[replica.id] = data

    def merge(self, ran: Iterable[Replica], warn: Callable[[str], None]) -> None:
        """Hand the data to its plugins; call before their ``pytest_sessionfinish``."""
        if not self.wanted:
            return
        missing = sorted(r.id for r in ran if r.tests_run and r.id not in self.outputs)
        self._merge_syrupy(missing, warn)

    def _merge_syrupy(self, missing: list[str], warn: Callable[[str], None]) -> None:
        snapshots = getattr(self.config, "_syrupy", None)
        if snapshots is None:
            return
        # This process replayed every report: its selection and outcomes are the run's.
        selected = {
            nodeid: status.value
            for nodeid, status in getattr(snapshots, "_selected_items", {}).items()
        }
        sidecars: list[str] = []
        for output in self.outputs.values():
            data = output.get(protocol.PERRUN_SYRUPY) or {}
            report = data.get("report")
            if report is not None:
                snapshots.add_worker_report({**report, "selected": selected})
            sidecars.extend(data.get("sidecars") or [])
        if sidecars:
            from syrupy.utils import cleanup_snapshot_write_sidecars

            cleanup_snapshot_write_sidecars(*sidecars)
        if missing and not getattr(self.config.option, "disable_unused_snapshots", True):
            self.config.option.disable_unused_snapshots = True
            warn(
                f"syrupy's unused-snapshot check is off for this run: replica "
                f"{', '.join(missing)} ended without handing over which snapshots its tests used"
            )
