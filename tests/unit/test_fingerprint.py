"""Environment fingerprints and import snapshots: what changes them, and what they report.

Snapshot tests write real files and set their mtimes with ``os.utime`` (nanoseconds), passing
``now_ns`` to decide which files count as racy; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_reuse_env.fingerprint import (
    COMPONENTS,
    DEFAULT_ENV_VARS,
    RACY_WINDOW_NS,
    FileState,
    changed_files,
    describe_difference,
    distributions_digest,
    environment_fingerprint,
    environment_key,
    installed_distributions_digest,
    selected_variables,
    snapshot_modules,
)

SECOND = 1_000_000_000


def fingerprint(tmp_path: Path, **overrides: Any) -> dict[str, str]:
    ini = tmp_path / "pytest.ini"
    if not ini.exists():
        ini.write_text("[pytest]\n")
    arguments: dict[str, Any] = {
        "python": "/usr/bin/python3",
        "args": ["-q", "tests"],
        "rootdir": str(tmp_path),
        "inifile": str(ini),
        "env": {"PATH": "/bin", "TZ": "UTC"},
        "env_vars": DEFAULT_ENV_VARS,
        "plugins": ["xdist", "timeout"],
    }
    arguments.update(overrides)
    return environment_fingerprint(**arguments)


# -- environment fingerprint -------------------------------------------------------------------


def test_fingerprint_has_every_component_and_is_stable(tmp_path: Path) -> None:
    first = fingerprint(tmp_path)
    assert tuple(first) == COMPONENTS
    assert fingerprint(tmp_path) == first
    assert first["python"].startswith("/usr/bin/python3 3.")
    assert first["rootdir"] == str(tmp_path)
    assert describe_difference(first, fingerprint(tmp_path)) is None


@pytest.mark.parametrize(
    ("component", "overrides", "message"),
    [
        ("python", {"python": "/opt/python"}, "the Python interpreter changed"),
        ("args", {"args": ["-q", "tests", "-x"]}, "pytest arguments changed"),
        ("args", {"args": ["tests", "-q"]}, "pytest arguments changed"),
        ("rootdir", {"rootdir": "/elsewhere"}, "the rootdir changed"),
        ("ini", {"inifile": None}, "the ini file changed"),
        ("plugins", {"plugins": ["xdist"]}, "pytest plugins changed"),
        ("env", {"env": {"PATH": "/bin", "TZ": "UTC", "PYTHONPATH": "src"}}, None),
    ],
)
def test_each_input_changes_only_its_component(
    tmp_path: Path, component: str, overrides: dict[str, Any], message: str | None
) -> None:
    before = fingerprint(tmp_path)
    after = fingerprint(tmp_path, **overrides)
    assert [name for name in COMPONENTS if before[name] != after[name]] == [component]
    if message is not None:
        assert describe_difference(before, after) == message


def test_plugin_order_does_not_count(tmp_path: Path) -> None:
    assert fingerprint(tmp_path, plugins=["timeout", "xdist", "xdist"]) == fingerprint(tmp_path)


def test_ini_content_counts(tmp_path: Path) -> None:
    before = fingerprint(tmp_path)
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -x\n")
    after = fingerprint(tmp_path)
    assert describe_difference(before, after) == "the ini file changed"
    assert fingerprint(tmp_path, inifile=None)["ini"] == "none"
    missing = fingerprint(tmp_path, inifile=str(tmp_path / "gone.ini"))["ini"]
    assert missing == "unreadable: No such file or directory"


def test_distributions_digest_follows_names_and_versions() -> None:
    base = distributions_digest([("pytest", "9.2.0"), ("psutil", "7.2.2")])
    assert distributions_digest([("psutil", "7.2.2"), ("pytest", "9.2.0")]) == base
    assert distributions_digest([("pytest", "9.2.1"), ("psutil", "7.2.2")]) != base
    assert distributions_digest([("pytest", "9.2.0")]) != base
    assert distributions_digest([("pytest", "9.2.0"), ("psutil", "7.2.2"), ("x", "1")]) != base


def test_installed_distributions_are_read_once(tmp_path: Path) -> None:
    installed_distributions_digest.cache_clear()
    digest = installed_distributions_digest()
    assert len(digest) == 16
    assert fingerprint(tmp_path)["distributions"] == digest
    assert installed_distributions_digest.cache_info().hits >= 1


class _Distribution:
    """A stand-in for an installed distribution: its RECORD, or None; reading its name or
    version fails when it has a RECORD (that would parse its METADATA on every run)."""

    def __init__(self, name: str, version: str, record: str | None) -> None:
        self._name = name
        self._version = version
        self._record = record

    def read_text(self, filename: str) -> str | None:
        assert filename == "RECORD"
        return self._record

    @property
    def name(self) -> str:
        assert self._record is None, "the metadata of a distribution with a RECORD was parsed"
        return self._name

    @property
    def version(self) -> str:
        assert self._record is None, "the metadata of a distribution with a RECORD was parsed"
        return self._version


def _installed(monkeypatch: pytest.MonkeyPatch, *dists: _Distribution) -> str:
    monkeypatch.setattr("importlib.metadata.distributions", lambda: list(dists))
    installed_distributions_digest.cache_clear()
    try:
        return installed_distributions_digest()
    finally:
        installed_distributions_digest.cache_clear()


def test_installed_distributions_digest_follows_each_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = "app-1.0.dist-info/METADATA,sha256=aaa,120\napp/__init__.py,sha256=bbb,10\n"
    egg = _Distribution("old", "0.1", None)
    base = _installed(monkeypatch, _Distribution("app", "1.0", record), egg)
    assert _installed(monkeypatch, egg, _Distribution("app", "1.0", record)) == base
    # The same version reinstalled with new code: its file's hash in RECORD changed.
    new_code = record.replace("sha256=bbb", "sha256=ccc")
    assert _installed(monkeypatch, _Distribution("app", "1.0", new_code), egg) != base
    # A new version: its METADATA (name and version) hashes differently.
    new_version = record.replace("sha256=aaa", "sha256=ddd")
    assert _installed(monkeypatch, _Distribution("app", "1.1", new_version), egg) != base
    # No RECORD: its name and version stand for it.
    other_egg = _Distribution("old", "0.2", None)
    assert _installed(monkeypatch, _Distribution("app", "1.0", record), other_egg) != base
    assert _installed(monkeypatch, _Distribution("app", "1.0", record)) != base


def test_distributions_component_names_the_change(tmp_path: Path) -> None:
    before = fingerprint(tmp_path)
    after = dict(before, distributions=distributions_digest([("other", "1")]))
    assert describe_difference(before, after) == "installed distributions changed"


def test_selected_variables_missing_differs_from_empty() -> None:
    missing = selected_variables({}, ["PYTHONPATH"])
    empty = selected_variables({"PYTHONPATH": ""}, ["PYTHONPATH"])
    assert missing == {"PYTHONPATH": "unset"}
    assert empty != missing
    assert selected_variables({"PYTHONPATH": "x"}, ["PYTHONPATH"]) != empty


def test_selected_variables_by_prefix_and_only_selected() -> None:
    env = {"PYTEST_REUSE_ENV_DB": "pg", "PYTEST_REUSE_ENV_X": "1", "HOME": "/root", "TZ": "UTC"}
    selected = selected_variables(env, DEFAULT_ENV_VARS)
    assert {"PYTEST_REUSE_ENV_DB", "PYTEST_REUSE_ENV_X", "TZ"} <= set(selected)
    assert "HOME" not in selected
    assert selected["PATH"] == "unset"
    assert selected_variables(dict(env, HOME="/elsewhere"), DEFAULT_ENV_VARS) == selected


def test_unselected_variables_do_not_count(tmp_path: Path) -> None:
    env = {"PATH": "/bin", "TZ": "UTC", "HOME": "/root", "PYTEST_CURRENT_TEST": "x"}
    assert fingerprint(tmp_path, env=env) == fingerprint(tmp_path)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PATH": "/bin", "TZ": "UTC", "PYTHONPATH": ""}, "PYTHONPATH"),
        ({"PATH": "/bin"}, "TZ"),
        ({"PATH": "/usr/bin", "TZ": "Europe/Paris"}, "PATH, TZ"),
        ({"PATH": "/bin", "TZ": "UTC", "PYTEST_REUSE_ENV_DB": "pg"}, "PYTEST_REUSE_ENV_DB"),
    ],
)
def test_describe_difference_names_the_variables(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    before = fingerprint(tmp_path)
    assert describe_difference(before, fingerprint(tmp_path, env=env)) == (
        f"environment variables changed: {named}"
    )


def test_env_component_is_json_of_variable_digests(tmp_path: Path) -> None:
    env = json.loads(fingerprint(tmp_path)["env"])
    assert env["TZ"] != "UTC"  # values are digests, never the values themselves
    assert len(env["TZ"]) == 16


def test_describe_difference_reports_the_first_component(tmp_path: Path) -> None:
    before = fingerprint(tmp_path)
    after = fingerprint(tmp_path, args=["-x"], python="/opt/python", plugins=[])
    assert describe_difference(before, after) == "the Python interpreter changed"
    assert describe_difference(before, dict(before, future="x")) == (
        "fingerprint component 'future' changed"
    )
    assert describe_difference(dict(before, env="garbage"), dict(before, env="[]")) == (
        "environment variables changed"
    )
    # Declared variables compare "unset" equal to absent: only the list of names changed.
    assert describe_difference(dict(before, env='{"TZ": "unset"}'), dict(before, env="{}")) == (
        "environment variables changed"
    )


def test_environment_key(tmp_path: Path) -> None:
    base = fingerprint(tmp_path)
    key = environment_key("replicas=1", base)
    assert len(key) == 16
    int(key, 16)
    assert environment_key("replicas=1", dict(reversed(base.items()))) == key
    assert environment_key("replicas=2", base) != key
    assert environment_key("replicas=1", fingerprint(tmp_path, args=["-x"])) != key


# -- import snapshot ---------------------------------------------------------------------------


def module(path: Path | str | None) -> types.ModuleType:
    made = types.ModuleType("fake")
    made.__file__ = None if path is None else str(path)
    return made


def write(path: Path, text: str, mtime_ns: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def now_ns() -> int:
    return 1_700_000_000 * SECOND


@pytest.fixture
def project(tmp_path: Path, now_ns: int) -> Path:
    root = tmp_path / "project"
    old = now_ns - 100 * SECOND
    write(root / "pkg" / "__init__.py", "", old)
    write(root / "pkg" / "core.py", "x = 1\n", old)
    write(root / "tests" / "conftest.py", "import pkg\n", old)
    return root


def test_snapshot_keeps_project_files_under_the_root(project: Path, now_ns: int) -> None:
    outside = write(project.parent / "elsewhere.py", "", now_ns)
    modules = {
        "pkg": module(project / "pkg" / "__init__.py"),
        "pkg.core": module(project / "pkg" / "core.py"),
        "conftest": module(project / "tests" / "conftest.py"),
        "elsewhere": module(outside),
        "namespace": module(None),
        "builtin": types.ModuleType("builtin"),
    }
    snapshot = snapshot_modules(modules, [str(project)], now_ns=now_ns)
    assert sorted(snapshot) == sorted(
        str(project / name) for name in ("pkg/__init__.py", "pkg/core.py", "tests/conftest.py")
    )
    core = snapshot[str(project / "pkg" / "core.py")]
    assert core == FileState(now_ns - 100 * SECOND, 6, None)
    assert changed_files(snapshot) == []


def test_snapshot_excludes_virtualenvs_and_site_packages(project: Path, now_ns: int) -> None:
    venv = project / ".venv"
    write(venv / "pyvenv.cfg", "home = /usr\n", now_ns)
    in_venv = write(venv / "lib" / "dep.py", "", now_ns)
    in_site = write(project / "vendor" / "site-packages" / "lib.py", "", now_ns)
    in_dist = write(project / "vendor" / "dist-packages" / "lib.py", "", now_ns)
    kept = write(project / "site-packages-notes" / "tool.py", "", now_ns)
    modules = {str(n): module(path) for n, path in enumerate([in_venv, in_site, in_dist, kept])}
    assert list(snapshot_modules(modules, [str(project)], now_ns=now_ns)) == [str(kept)]


def test_snapshot_excludes_this_interpreters_prefix(project: Path) -> None:
    modules = {"json": sys.modules["json"], "pytest": sys.modules["pytest"]}
    assert snapshot_modules(modules, ["/"]) == {}


def test_pyc_stands_for_its_source(project: Path, now_ns: int) -> None:
    source = project / "pkg" / "core.py"
    cached = project / "pkg" / "__pycache__" / f"core.{sys.implementation.cache_tag}.pyc"
    write(cached, "", now_ns)
    sourceless = write(project / "pkg" / "only.pyc", "", now_ns)
    modules = {"pkg.core": module(cached), "pkg.only": module(sourceless)}
    snapshot = snapshot_modules(modules, [str(project)], now_ns=now_ns)
    assert sorted(snapshot) == sorted([str(source), str(sourceless)])


def test_snapshot_resolves_symlinks_and_takes_extra_files(project: Path, now_ns: int) -> None:
    link = project.parent / "link"
    link.symlink_to(project)
    snapshot = snapshot_modules(
        {"pkg.core": module(link / "pkg" / "core.py")},
        [str(link)],
        extra_files=[str(project / "tests" / "conftest.py")],
        now_ns=now_ns,
    )
    assert sorted(snapshot) == [
        str(project / "pkg" / "core.py"),
        str(project / "tests" / "conftest.py"),
    ]


def test_changed_files_sees_an_edit_and_a_deletion(project: Path, now_ns: int) -> None:
    core, init, conftest = (
        project / "pkg" / "core.py",
        project / "pkg" / "__init__.py",
        project / "tests" / "conftest.py",
    )
    modules = {str(n): module(path) for n, path in enumerate([core, init, conftest])}
    snapshot = snapshot_modules(modules, [str(project)], now_ns=now_ns)
    write(core, "x = 2\n", now_ns + SECOND)
    init.unlink()
    assert changed_files(snapshot) == sorted([str(core), str(init)])


def test_changed_files_sees_a_size_change_with_the_same_mtime(project: Path, now_ns: int) -> None:
    core = project / "pkg" / "core.py"
    snapshot = snapshot_modules({"c": module(core)}, [str(project)], now_ns=now_ns)
    write(core, "x = 100\n", now_ns - 100 * SECOND)
    assert changed_files(snapshot) == [str(core)]


def test_a_racy_file_is_compared_by_content(project: Path, now_ns: int) -> None:
    core = write(project / "pkg" / "core.py", "x = 1\n", now_ns - RACY_WINDOW_NS)
    snapshot = snapshot_modules({"c": module(core)}, [str(project)], now_ns=now_ns)
    assert snapshot[str(core)].digest is not None
    assert changed_files(snapshot) == []
    # Same size, same mtime: only the content tells.
    write(core, "x = 2\n", now_ns - RACY_WINDOW_NS)
    assert changed_files(snapshot) == [str(core)]


def test_a_file_modified_after_the_snapshot_time_is_racy(project: Path, now_ns: int) -> None:
    core = write(project / "pkg" / "core.py", "x = 1\n", now_ns + 5 * SECOND)
    snapshot = snapshot_modules({"c": module(core)}, [str(project)], now_ns=now_ns)
    write(core, "x = 2\n", now_ns + 5 * SECOND)
    assert changed_files(snapshot) == [str(core)]


def test_an_old_file_is_compared_by_stat_only(project: Path, now_ns: int) -> None:
    # The documented limit: a same-size edit that restores an old mtime goes unseen.
    core = write(project / "pkg" / "core.py", "x = 1\n", now_ns - RACY_WINDOW_NS - 1)
    snapshot = snapshot_modules({"c": module(core)}, [str(project)], now_ns=now_ns)
    assert snapshot[str(core)].digest is None
    write(core, "x = 2\n", now_ns - RACY_WINDOW_NS - 1)
    assert changed_files(snapshot) == []


def test_snapshots_merge_per_file(project: Path, now_ns: int) -> None:
    core, init = project / "pkg" / "core.py", project / "pkg" / "__init__.py"
    first = snapshot_modules({"c": module(core)}, [str(project)], now_ns=now_ns)
    write(core, "x = 22\n", now_ns + SECOND)
    later = snapshot_modules({"c": module(core), "i": module(init)}, [str(project)])
    later.update(first)  # files imported earlier keep the state they were imported in
    assert changed_files(later) == [str(core)]


def test_snapshot_with_real_sys_modules_finds_this_package() -> None:
    root = Path(__file__).resolve().parents[2]
    snapshot = snapshot_modules(sys.modules, [str(root)])
    assert str(root / "pytest_reuse_env" / "fingerprint.py") in snapshot
    assert all(".venv" not in Path(path).parts for path in snapshot)


def test_the_plugins_own_code_is_part_of_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm replica runs the plugin code it started with: an edited (editable) install with
    the same version number must give another environment, not an attach."""
    from pytest_reuse_env.controller import launcher

    package = tmp_path / "pytest_reuse_env"
    (package / "controller").mkdir(parents=True)
    (package / "controller" / "launcher.py").write_text("# launcher\n")
    (package / "protocol.py").write_text("VERSION = 1\n")
    monkeypatch.setattr(launcher, "__file__", str(package / "controller" / "launcher.py"))
    before = launcher._own_code()
    assert launcher._own_code() == before, "stable while nothing changes"
    (package / "protocol.py").write_text("VERSION = 22\n")
    assert launcher._own_code() != before
    edited = launcher._own_code()
    (package / "controller" / "launcher.py").write_text("# launcher, edited\n")
    assert launcher._own_code() != edited, "files in subpackages count too"
