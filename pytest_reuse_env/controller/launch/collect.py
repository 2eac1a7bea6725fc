"""Which test files a run-scoped replica collects: the files that hold the tests routed to its
environment, not everything the run's arguments name.

A replica that collected the whole suite to run a handful of marked tests paid for every other
file's imports and collection, in its own process, before its first test. It now collects what
it is sent (``StartPayload.collect``): a replica started once collection is done gets the list
in START; one started while this process still collects (``Router`` starts it at the first
routed test) sets up its pytest session meanwhile and collects when COLLECT brings the list
(``StartPayload.collect_later``). Waiting costs nothing when few files hold routed tests; when
nearly all do, the replica's collection now follows this process's instead of running beside
it. With ``reuse_all`` every test is routed: replicas started at session start collect the
run's arguments at once, as before.

Only run-scoped replicas on this machine (``PopenStrategy``): a ``scope="global"`` replica
serves later runs, which may route other tests, and a watch session's next round may too; those
collect the run's arguments. So does any replica of a run whose arguments name test ids
(``file::name``: the replica then collects exactly those) or modules (``--pyargs``).

The replica also loads every conftest.py this process loaded, first: in plain pytest a conftest
beside other test files still runs its session-wide hooks (``pytest_configure``, a
``pytest_collection_modifyitems`` that marks any item) for the whole run.

Seeing fewer files can change a test (a hook that marks by position, a same-named module
another file imported first): with the lists go what this process collected for those tests,
and the replica says in READY how its own collection differs (``collection_check.py``). Its
environment then collects the run's arguments (``fall_back``), as it does after a replica that
could not start with its list, and so do the command's later runs (``prestart.py`` keeps it).

Runs in the controller; imports the standard library, pytest and the package's ``protocol``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, final

import pytest

from pytest_reuse_env import protocol

if TYPE_CHECKING:
    from pytest_reuse_env.controller.replica import Replica


def by_file_only(args: Iterable[str], options: Any) -> bool:
    """Whether replicas may collect by file: the run's arguments name paths, not test ids
    (``path::name``) or modules (``--pyargs``), so a file's nodeids are the same whichever
    way it is collected."""
    return not getattr(options, "pyargs", False) and not any("::" in str(a) for a in args)


def files_of(items: Iterable[pytest.Item]) -> list[str] | None:
    """The sorted, distinct files that hold the tests: each test's file node's path (a test's
    own ``path`` may name another file, a plugin's data file say). None when a test has no
    file node above it: then only the run's arguments collect it."""
    files: set[str] = set()
    seen: set[int] = set()  # the parents already looked up: a file's tests are many, in a row
    for item in items:
        parent = id(item.parent)
        if parent in seen:
            continue
        seen.add(parent)
        node = item.getparent(pytest.File)  # type: ignore[type-abstract]
        if node is None:
            return None
        files.add(str(node.path))
    return sorted(files)


def loaded_conftests(config: pytest.Config) -> list[str]:
    """Every conftest.py this process loaded, in the order it registered them: pytest names
    each by its path. A replica loads them all before it collects its files, so that a
    conftest beside other test files runs its session-wide hooks there too, as here."""
    manager = config.pluginmanager
    conftests = getattr(manager, "_conftest_plugins", None)
    return [
        name
        for name, plugin in manager.list_name_plugin()
        if plugin is not None
        and (plugin in conftests if conftests is not None else name.endswith("conftest.py"))
    ]


@final
class FileLists:
    """Each environment's test files, once this process's collection is done, and the
    replicas started before then that wait for theirs."""

    def __init__(self) -> None:
        #: Replicas may collect by file (``by_file_only``, not a watch session); set by the
        #: controller before it starts any.
        self.enabled = False
        #: Environment name -> its test files; None while this process still collects.
        self._files: dict[str, list[str]] | None = None
        #: The conftests this process loaded (``loaded_conftests``), once collected.
        self._conftests: list[str] = []
        self._waiting: list[tuple[str, Replica]] = []
        #: Environments every test of the run goes to (``reuse_all``): replicas started while
        #: collecting collect the run's arguments alongside this process.
        self._every_test: set[str] = set()
        #: Environments whose replicas collect the run's arguments from now on: a test there
        #: has no file node, or a replica's collection of only its files differed.
        self._whole_run: set[str] = set()
        #: For the run's summary: environments that collect the whole run, and why.
        self.notes: list[str] = []
        #: Environments that fell back to the whole run in this run -> why.
        self.fell_back: dict[str, str] = {}
        #: Replicas (ids) told to collect a list of files, not the run's arguments.
        self._listed: set[str] = set()
        #: ``collection_check``: each environment's tests' digests (JSON), the project modules.
        self._expect: dict[str, str] = {}
        self._modules: dict[str, str] = {}

    def every_test(self, name: str) -> None:
        self._every_test.add(name)

    def fall_back(self, name: str, reason: str) -> None:
        """Replicas of ``name`` started from now on collect the run's arguments: ``reason`` says
        why, in the run's notes, and this command's later runs do the same (``fell_back``,
        kept by ``prestart.py``)."""
        if name in self._whole_run:
            return
        self._whole_run.add(name)
        self.fell_back[name] = reason
        self.notes.append(f"{name}: replicas collect every file of the run: {reason}")

    def remembered(self, reasons: dict[str, str]) -> None:
        """Environments whose replicas collected every file since an earlier run of this
        command found that a replica with a list could not serve (``fall_back`` then)."""
        for name, reason in reasons.items():
            if name not in self._whole_run:
                self._whole_run.add(name)
                self.notes.append(
                    f"{name}: replicas collect every file of the run, as an earlier run of "
                    f"this command chose: {reason}"
                )

    def gets_list(self, name: str) -> bool:
        """Whether replicas of environment ``name`` collect a list of files (not the run's
        arguments), as far as known now."""
        return self.enabled and name not in self._every_test and name not in self._whole_run

    @property
    def wants_lists(self) -> bool:
        """Whether ``known`` still has a use: replicas collect by file, and this run's lists
        are not known yet (a watch session's later rounds collect again; the lists stay)."""
        return self.enabled and self._files is None

    def tell(self, name: str, replica: Replica, payload: protocol.StartPayload) -> None:
        """What a new run-scoped replica of environment ``name`` is to collect, in the START
        it is about to be sent; one told to wait gets its list with ``known``."""
        if not self.enabled or name in self._whole_run:
            return
        if self._files is not None:
            payload["collect"] = self._payload(name)
            self._listed.add(replica.id)
        elif name not in self._every_test:
            payload["collect_later"] = True
            self._waiting.append((name, replica))
            self._listed.add(replica.id)

    def start_failed(self, replica: Replica) -> bool:
        """A replica that could not start: if it was collecting a list of files, its
        environment falls back to the run's arguments (a hook may need the whole run);
        whether it was."""
        name = replica.environment_name
        if replica.id not in self._listed or name in self._whole_run:
            return False
        self.fall_back(name, "one that collected only the files of its tests could not start")
        return True

    def known(
        self,
        files: dict[str, list[str] | None],
        conftests: list[str],
        now: float,
        *,
        expect: dict[str, dict[str, str]] | None = None,
        modules: dict[str, str] | None = None,
    ) -> None:
        """Collection is done (``files`` by environment, None: some test has no file node;
        an environment left out has none; ``conftests``: ``loaded_conftests``; ``expect`` and
        ``modules``: what the replicas check their collection against, ``collection_check``):
        the waiting replicas get their lists. Once: the lists of a run do not change."""
        if self._files is not None:
            return
        self._files = {}
        for name, listed in files.items():
            if listed is None:
                self._whole_run.add(name)
            else:
                self._files[name] = listed
        self._conftests = conftests
        # Encoded once for every replica of an environment (``CollectPayload.expect``).
        self._expect = {name: json.dumps(digests) for name, digests in (expect or {}).items()}
        self._modules = modules or {}
        waiting, self._waiting = self._waiting, []
        for name, replica in waiting:
            if name in self._whole_run:
                self._listed.discard(replica.id)
            replica.collect(protocol.collect(self._payload(name)), now)

    def _payload(self, name: str) -> protocol.CollectPayload:
        """A list of files to collect; the run's arguments (no list) for an environment that
        collects the whole run."""
        if name in self._whole_run:
            return {"files": [], "conftests": [], "whole_run": True}
        files = self._files.get(name, []) if self._files is not None else []
        return {
            "files": files,
            "conftests": self._conftests,
            "expect": self._expect.get(name, "{}"),
            "modules": self._modules,
        }
