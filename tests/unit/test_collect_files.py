"""Which test files a run-scoped replica collects (controller/launch/collect.py, and the
replica's side in replica/session.py): its environment's files, in START or in a later
COLLECT, and the run's arguments where a list could change what is collected."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.launch.collect import (
    FileLists,
    by_file_only,
    files_of,
    loaded_conftests,
)
from pytest_reuse_env.replica import session as replica_session
from pytest_reuse_env.replica.session import ReplicaSession
from tests.unit.fakes import start_payload


class FakeReplica:
    count = 0

    def __init__(self, environment_name: str = "db") -> None:
        FakeReplica.count += 1
        self.id = f"r{FakeReplica.count}"
        self.environment_name = environment_name
        self.collected: list[tuple[protocol.Message, float]] = []

    def collect(self, message: protocol.Message, now: float) -> None:
        self.collected.append((message, now))


def test_replicas_collect_by_file_unless_the_arguments_name_test_ids_or_modules() -> None:
    plain = SimpleNamespace(pyargs=False)
    assert by_file_only(["tests", "other/test_a.py"], plain)
    assert by_file_only([], plain)
    assert not by_file_only(["tests/test_a.py::test_one"], plain)
    assert not by_file_only(["tests"], SimpleNamespace(pyargs=True))


#: One node per file path, as pytest collects it.
FILE_NODES: dict[str, SimpleNamespace] = {}


class FakeItem:
    """A test whose file node is ``file`` (None: no file node above it)."""

    def __init__(self, file: str | None, path: str = "/p/data.json") -> None:
        self.path = Path(path)  # a test's own path may name another file
        self._file = (
            None if file is None else FILE_NODES.setdefault(file, SimpleNamespace(path=Path(file)))
        )
        # As in pytest, the tests of one file share their parent node.
        self.parent = self._file if self._file is not None else SimpleNamespace()

    def getparent(self, cls: type) -> Any:
        assert cls is pytest.File
        return self._file


def test_test_files_are_their_file_nodes_distinct_and_sorted() -> None:
    items: list[Any] = [FakeItem("/p/b.py"), FakeItem("/p/a.py"), FakeItem("/p/b.py")]
    assert files_of(items) == ["/p/a.py", "/p/b.py"]


def test_a_test_without_a_file_node_means_no_list() -> None:
    items: list[Any] = [FakeItem("/p/a.py"), FakeItem(None)]
    assert files_of(items) is None


def test_disabled_lists_leave_start_as_it_was() -> None:
    lists = FileLists()
    payload = start_payload("r0")
    replica = FakeReplica()
    lists.tell("default", replica, payload)  # type: ignore[arg-type]
    assert "collect" not in payload
    assert "collect_later" not in payload
    assert not lists.wants_lists
    lists.known({"default": ["/p/a.py"]}, [], 1.0)  # nobody waits
    assert replica.collected == []


def test_a_replica_started_while_collecting_gets_its_list_in_collect() -> None:
    lists = FileLists()
    lists.enabled = True
    early, other = FakeReplica(), FakeReplica()
    for name, replica in (("db", early), ("other", other)):
        payload = start_payload("r0")
        lists.tell(name, replica, payload)  # type: ignore[arg-type]
        assert payload.get("collect_later") is True
        assert "collect" not in payload
    assert lists.wants_lists
    conftests = ["/p/conftest.py", "/p/other/conftest.py"]
    expect, modules = {"test_db.py::test_one": "d1"}, {"helpers": "/p/helpers.py"}
    lists.known({"db": ["/p/test_db.py"]}, conftests, 5.0, expect={"db": expect}, modules=modules)
    assert early.collected == [
        (
            protocol.collect(
                {
                    "files": ["/p/test_db.py"],
                    "conftests": conftests,
                    "expect": json.dumps(expect),
                    "modules": modules,
                }
            ),
            5.0,
        )
    ]
    # An environment none of whose tests is left (deselected): it collects nothing.
    assert other.collected == [
        (
            protocol.collect(
                {"files": [], "conftests": conftests, "expect": "{}", "modules": modules}
            ),
            5.0,
        )
    ]
    assert not lists.wants_lists
    lists.known({"db": ["/elsewhere.py"]}, [], 6.0)  # a second collection: no change
    assert len(early.collected) == 1


def test_a_replica_started_after_collection_gets_its_list_in_start() -> None:
    lists = FileLists()
    lists.enabled = True
    lists.known({"db": ["/p/test_db.py"]}, ["/p/conftest.py"], 1.0)
    payload = start_payload("r1")
    replica = FakeReplica()
    lists.tell("db", replica, payload)  # type: ignore[arg-type]
    assert payload.get("collect") == {
        "files": ["/p/test_db.py"],
        "conftests": ["/p/conftest.py"],
        "expect": "{}",
        "modules": {},
    }
    assert "collect_later" not in payload
    lists.known({"db": ["/elsewhere.py"]}, [], 2.0)
    assert replica.collected == []


# -- the replica's side ----------------------------------------------------------------------


class FakeChannel:
    def send(self, message: protocol.Message) -> None:
        pass


class FakePluginManager:
    def __init__(self, fail: bool = False) -> None:
        self.loaded: list[Path] = []
        self.fail = fail

    def _loadconftestmodules(self, path: Path, *args: Any, **kwargs: Any) -> None:
        if self.fail:
            raise ImportError("conftest.py: no module named 'settings'")
        self.loaded.append(path)


def collecting_replica(*, fail: bool = False, **start: Any) -> tuple[ReplicaSession, Any]:
    payload = start_payload("r0")
    payload.update(start)  # type: ignore[typeddict-item]
    replica = ReplicaSession(FakeChannel(), queue.SimpleQueue(), payload)
    config = SimpleNamespace(
        args=["tests"],
        pluginmanager=FakePluginManager(fail),
        rootpath=Path("/p"),
        getoption=lambda name: "prepend",
        getini=lambda name: False,
    )
    return replica, SimpleNamespace(config=config)


def wanted(*files: str, conftests: tuple[str, ...] = ()) -> protocol.CollectPayload:
    return {"files": list(files), "conftests": list(conftests)}


def test_a_list_in_start_replaces_the_run_arguments_after_the_controllers_conftests() -> None:
    conftests = ("/p/tests/conftest.py", "/p/tests/other/conftest.py")
    replica, session = collecting_replica(collect=wanted("/p/test_a.py", conftests=conftests))
    replica.pytest_collection(session)
    assert session.config.args == ["/p/test_a.py"]
    # Loaded in the controller's order, by directory (pytest's loader takes a directory).
    assert session.config.pluginmanager.loaded == [Path("/p/tests"), Path("/p/tests/other")]


def test_a_conftest_that_cannot_be_loaded_means_the_run_arguments() -> None:
    """pytest's own collection then meets the failure, and reports it as the controller's."""
    replica, session = collecting_replica(
        fail=True, collect=wanted("/p/test_a.py", conftests=("/p/conftest.py",))
    )
    replica.pytest_collection(session)
    assert session.config.args == ["tests"]


def test_without_a_list_the_replica_collects_the_run_arguments() -> None:
    replica, session = collecting_replica()
    replica.pytest_collection(session)
    assert session.config.args == ["tests"]


def test_told_to_collect_the_whole_run_after_waiting_the_replica_collects_the_arguments() -> None:
    replica, session = collecting_replica(collect_later=True)
    replica.inbox.put(protocol.collect({"files": [], "conftests": [], "whole_run": True}))
    replica.pytest_collection(session)
    assert session.config.args == ["tests"]


def test_collect_later_waits_for_collect_and_keeps_what_came_before_it() -> None:
    replica, session = collecting_replica(collect_later=True)
    replica.inbox.put(protocol.collect(wanted("/p/test_a.py", "/p/test_b.py")))
    replica.pytest_collection(session)
    assert session.config.args == ["/p/test_a.py", "/p/test_b.py"]
    assert replica._held == []


@pytest.mark.parametrize("message", [protocol.shutdown(), protocol.END])
def test_asked_to_stop_before_collect_the_replica_collects_nothing(
    message: protocol.Message,
) -> None:
    replica, session = collecting_replica(collect_later=True)
    replica.inbox.put(message)
    replica.pytest_collection(session)
    assert session.config.args == []
    assert replica._held == [message]  # handled once serving: it ends then


def test_no_collect_in_time_means_the_run_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_session, "COLLECT_WAIT_SECONDS", 0.0)
    replica, session = collecting_replica(collect_later=True)
    replica.pytest_collection(session)
    assert session.config.args == ["tests"]
    replica._handle(protocol.collect(wanted("/p/test_a.py")))  # too late: nothing to do


def test_with_reuse_all_replicas_started_while_collecting_collect_the_arguments_at_once() -> None:
    """Every test is routed: waiting for the list would only put the replica's collection
    after this process's instead of beside it."""
    lists = FileLists()
    lists.enabled = True
    lists.every_test("default")
    payload = start_payload("r0")
    replica = FakeReplica()
    lists.tell("default", replica, payload)  # type: ignore[arg-type]
    assert "collect" not in payload
    assert "collect_later" not in payload
    lists.known({"default": ["/p/a.py"]}, [], 1.0)
    assert replica.collected == []
    later = start_payload("r1")  # a replacement, once the files are known: its list
    lists.tell("default", FakeReplica(), later)  # type: ignore[arg-type]
    assert later.get("collect") == {
        "files": ["/p/a.py"],
        "conftests": [],
        "expect": "{}",
        "modules": {},
    }


def test_an_environment_with_a_test_outside_any_file_collects_the_whole_run() -> None:
    """``files_of`` found a test with no file node: the waiting replica is told to collect the
    run's arguments, and so is every later one."""
    lists = FileLists()
    lists.enabled = True
    early = FakeReplica()
    lists.tell("db", early, start_payload("r0"))  # type: ignore[arg-type]
    lists.known({"db": None}, ["/p/conftest.py"], 3.0)
    assert early.collected == [
        (protocol.collect({"files": [], "conftests": [], "whole_run": True}), 3.0)
    ]
    later = start_payload("r1")
    lists.tell("db", FakeReplica(), later)  # type: ignore[arg-type]
    assert "collect" not in later
    assert "collect_later" not in later


def test_a_replica_with_a_list_that_could_not_start_makes_its_environment_collect_all() -> None:
    lists = FileLists()
    lists.enabled = True
    lists.known({"db": ["/p/test_db.py"]}, [], 1.0)
    listed, unlisted = FakeReplica("db"), FakeReplica("db")
    lists.tell("db", listed, start_payload(listed.id))  # type: ignore[arg-type]
    assert not lists.start_failed(unlisted)  # type: ignore[arg-type]
    assert lists.start_failed(listed)  # type: ignore[arg-type]
    assert lists.notes == [
        "db: replicas collect every file of the run: one that collected only the files of its "
        "tests could not start"
    ]
    assert lists.fell_back == {
        "db": "one that collected only the files of its tests could not start"
    }
    assert not lists.start_failed(listed)  # type: ignore[arg-type]  # once
    assert len(lists.notes) == 1
    replacement = start_payload("r9")
    lists.tell("db", FakeReplica("db"), replacement)  # type: ignore[arg-type]
    assert "collect" not in replacement


def test_after_a_differing_collection_new_replicas_collect_the_whole_run() -> None:
    lists = FileLists()
    lists.enabled = True
    lists.known({"db": ["/p/test_db.py"], "other": ["/p/test_o.py"]}, [], 1.0)
    lists.fall_back("db", "module helpers ...")
    lists.fall_back("db", "again")  # once
    assert lists.fell_back == {"db": "module helpers ..."}
    replacement, other = start_payload("r1"), start_payload("r2")
    lists.tell("db", FakeReplica(), replacement)  # type: ignore[arg-type]
    lists.tell("other", FakeReplica(), other)  # type: ignore[arg-type]
    assert "collect" not in replacement
    assert other.get("collect", {}).get("files") == ["/p/test_o.py"]


def test_an_environment_an_earlier_run_fell_back_for_collects_the_whole_run_at_once() -> None:
    lists = FileLists()
    lists.enabled = True
    lists.remembered({"db": "a hook that needs the whole run"})
    early = start_payload("r0")
    lists.tell("db", FakeReplica(), early)  # type: ignore[arg-type]
    assert "collect_later" not in early
    assert lists.fell_back == {}  # nothing new to remember
    assert lists.notes == [
        "db: replicas collect every file of the run, as an earlier run of this command "
        "chose: a hook that needs the whole run"
    ]


def test_the_conftests_sent_are_the_loaded_ones_in_registration_order() -> None:
    """pytest names a conftest plugin by its path; other plugins are left out."""
    root, sibling, other = object(), object(), object()

    class Manager:
        def __init__(self) -> None:
            self._conftest_plugins = {root, sibling}

        def list_name_plugin(self) -> list[tuple[str, object]]:
            return [
                ("/p/conftest.py", root),
                ("xdist", other),
                ("/p/tests/b/conftest.py", sibling),
                ("blocked", None),
            ]

    config: Any = SimpleNamespace(pluginmanager=Manager())
    assert loaded_conftests(config) == ["/p/conftest.py", "/p/tests/b/conftest.py"]
