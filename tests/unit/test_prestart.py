"""A command's hint of spare replicas (``prestart.py``): what is "the same command", what is
remembered and forgotten, and that a missing, broken or unwritable hint file is only a slower
start."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_reuse_env import prestart


class FakeConfig:
    """What prestart reads of a config: the invocation and where the cache is."""

    def __init__(self, root: Path, args: tuple[str, ...] = ("tests",)) -> None:
        self.rootpath = root
        self.invocation_params = SimpleNamespace(args=args, dir=root)
        self.stash = pytest.Stash()

    def getini(self, name: str) -> Any:
        assert name == "cache_dir"
        return ".pytest_cache"


def config(root: Path, *args: str) -> Any:
    return FakeConfig(root, args or ("tests",))


def test_a_hint_is_remembered_for_the_same_command_only(tmp_path: Path) -> None:
    prestart.remember(config(tmp_path), 2)
    assert prestart.hinted(config(tmp_path)) == min(2, os.cpu_count() or 1)
    assert prestart.hinted(config(tmp_path, "tests", "-k", "fast")) == 0, "other arguments"
    assert prestart.hinted(config(tmp_path / "sub")) == 0, "another directory"


def test_pytest_addopts_is_part_of_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prestart.remember(config(tmp_path), 1)
    monkeypatch.setenv("PYTEST_ADDOPTS", "--reuse=off")
    assert prestart.hinted(config(tmp_path)) == 0


def test_a_command_that_started_none_forgets_its_hint(tmp_path: Path) -> None:
    prestart.remember(config(tmp_path), 1)
    prestart.remember(config(tmp_path), 0)
    assert prestart.hinted(config(tmp_path)) == 0
    hints = json.loads((tmp_path / ".pytest_cache" / "reuse" / prestart.HINTS_FILE).read_text())
    assert hints == {}


def test_only_the_newest_commands_are_kept(tmp_path: Path) -> None:
    for number in range(prestart.MAX_COMMANDS + 3):
        prestart.remember(config(tmp_path, f"test_{number}.py"), 1)
    assert prestart.hinted(config(tmp_path, "test_0.py")) == 0, "the oldest went first"
    newest = f"test_{prestart.MAX_COMMANDS + 2}.py"
    assert prestart.hinted(config(tmp_path, newest)) == 1
    hints = json.loads((tmp_path / ".pytest_cache" / "reuse" / prestart.HINTS_FILE).read_text())
    assert len(hints) == prestart.MAX_COMMANDS


def test_never_more_spares_than_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prestart.remember(config(tmp_path), 64)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert prestart.hinted(config(tmp_path)) == 3


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"x": "two"}'])
def test_a_broken_hint_file_is_no_hint(tmp_path: Path, text: str) -> None:
    directory = tmp_path / ".pytest_cache" / "reuse"
    directory.mkdir(parents=True)
    (directory / prestart.HINTS_FILE).write_text(text)
    assert prestart.hinted(config(tmp_path)) == 0
    prestart.remember(config(tmp_path), 1)  # and is replaced
    assert prestart.hinted(config(tmp_path)) == 1


def test_a_hint_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    (tmp_path / ".pytest_cache").write_text("a file where the cache directory would be")
    prestart.remember(config(tmp_path), 1)
    assert prestart.hinted(config(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pytest_cache"], "nothing left"


def test_no_hint_file_is_read_as_none(tmp_path: Path) -> None:
    assert prestart.hinted(config(tmp_path)) == 0
    assert not (tmp_path / ".pytest_cache").exists(), "reading creates nothing"


def test_environments_that_fell_back_to_the_whole_run_are_kept_per_command(
    tmp_path: Path,
) -> None:
    assert prestart.whole_run(config(tmp_path)) == {}
    prestart.remember_whole_run(config(tmp_path), {"db": "module helpers differs"})
    prestart.remember_whole_run(config(tmp_path), {"other": "could not start"})
    assert prestart.whole_run(config(tmp_path)) == {
        "db": "module helpers differs",
        "other": "could not start",
    }
    assert prestart.whole_run(config(tmp_path, "tests", "-k", "x")) == {}, "another command"
    # The spares' hint is a file of its own: neither reads the other's.
    assert prestart.hinted(config(tmp_path)) == 0


def test_a_broken_whole_run_file_is_no_environment(tmp_path: Path) -> None:
    directory = tmp_path / ".pytest_cache" / "reuse"
    directory.mkdir(parents=True)
    (directory / prestart.WHOLE_RUN_FILE).write_text("[not, json")
    assert prestart.whole_run(config(tmp_path)) == {}
    prestart.remember_whole_run(config(tmp_path), {"db": "why"})
    assert prestart.whole_run(config(tmp_path)) == {"db": "why"}


POLICY = "replicas=2 idle_ttl=30 concurrency=1 scaledown_ttl=30 scope=run"


def test_environments_in_every_file_are_kept_per_command_and_read_only_with_a_hint(
    tmp_path: Path,
) -> None:
    prestart.remember_every_file(config(tmp_path), [POLICY])
    assert prestart.every_file(config(tmp_path)) == [], "no spares hinted: nothing starts early"
    prestart.remember(config(tmp_path), 2)
    assert prestart.every_file(config(tmp_path)) == [POLICY]
    prestart.remember(config(tmp_path, "other"), 2)
    assert prestart.every_file(config(tmp_path, "other")) == [], "another command"
    prestart.remember_every_file(config(tmp_path), [])
    assert prestart.every_file(config(tmp_path)) == [], "forgotten"
    # Counts stay a file of their own, as an older plugin wrote them.
    counts = json.loads((tmp_path / ".pytest_cache" / "reuse" / prestart.HINTS_FILE).read_text())
    assert sorted(counts.values()) == [2, 2]


def test_every_file_is_written_only_when_it_changed(tmp_path: Path) -> None:
    same = config(tmp_path)
    prestart.remember_every_file(same, [POLICY])
    path = tmp_path / ".pytest_cache" / "reuse" / prestart.EVERY_FILE_FILE
    path.unlink()
    prestart.remember_every_file(same, [POLICY])  # what this run read and wrote: no write
    assert not path.exists()
    prestart.remember_every_file(config(tmp_path), [POLICY])  # a new run reads none: writes
    assert path.exists()


def test_a_broken_every_file_file_is_no_environment(tmp_path: Path) -> None:
    prestart.remember(config(tmp_path), 1)
    directory = tmp_path / ".pytest_cache" / "reuse"
    (directory / prestart.EVERY_FILE_FILE).write_text('{"x": [1, 2')
    assert prestart.every_file(config(tmp_path)) == []
    prestart.remember_every_file(config(tmp_path), [POLICY])
    assert prestart.every_file(config(tmp_path)) == [POLICY]
