"""End to end: where the code under test lives (issue "Warm through edits", item 2).

An edited project module leaves ``sys.modules`` with every project module importing it,
directly or not; third-party packages (site-packages) stay loaded; code on an editable
install's path (a ``.pth`` entry, as setuptools writes for a src layout) is project code,
re-imported in the warm replica. The project of ``test_reload.py``; every run is compared with
a ``--reuse=off`` run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_reload import (
    edit,
    first_run,
    project,
    replica_setups,
    same_as_plain,
    stayed_warm,
    summary,
    write,
)

__all__ = ["project"]  # the fixture, shared


def dist_info(site: Path, name: str, record: str) -> None:
    write(site / f"{name}-1.0.dist-info" / "METADATA", f"Name: {name}\nVersion: 1.0\n")
    write(site / f"{name}-1.0.dist-info" / "RECORD", record)


def test_importers_are_re_imported_transitively_and_site_packages_stay_loaded(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = project.path / "site" / "site-packages"
    # A third-party package that notes each import of itself (by pid) next to the setups.
    write(
        site / "thirdparty" / "__init__.py",
        f"from pathlib import Path\nimport os\n\n"
        f"with Path({str(project.path / 'setups.txt')!r}).open('a') as f:\n"
        f"    f.write(f'thirdparty {{os.getpid()}}\\n')\n",
    )
    dist_info(site, "thirdparty", "thirdparty/__init__.py,,\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    write(
        project.path / "app" / "service.py",
        "import thirdparty\n\nfrom app.core import double\n\n\n"
        "def quadruple(x):\n    return double(double(x))\n",
    )
    write(project.path / "app" / "api.py", "from app import service\n")
    write(
        project.path / "tests" / "test_api.py",
        "from app.api import service\n\n\ndef test_quadruple():\n"
        "    assert service.quadruple(1) == 4\n",
    )
    pid = first_run_with(project, ["thirdparty", "db", "index"])
    edit(project.path / "app" / "core.py", "2 * x", "3 * x")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_api.py::test_quadruple"] == ("FAILED", "assert 9 == 4")
    # core.py, service.py (imports it), api.py (imports service) and both test modules.
    result.stdout.fnmatch_lines(
        [
            "reuse: g-* re-imported app/api.py, app/core.py, app/service.py, "
            "tests/test_api.py, tests/test_core.py; kept db, index (*)"
        ],
        consecutive=False,
    )
    # The third-party package was not imported again, nor any fixture set up again.
    assert replica_setups(project, {pid}) == ["thirdparty", "db", "index"]


def first_run_with(project: pytest.Pytester, setups: list[str]) -> int:
    """``first_run`` for a project whose replica notes more than its two fixtures."""
    _, env = same_as_plain(project)
    assert env["replicas_started"] == 1
    pids = [r["pid"] for r in env["replicas"] if r["ended"] is None]
    assert replica_setups(project, set(pids)) == setups
    pid: int = pids[0]
    return pid


def test_code_on_an_editable_install_path_is_re_imported_in_place(
    project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Outside the rootdir, reached only through a .pth file in site-packages (setuptools'
    # editable install of a src layout); site.addsitedir reads it, as at interpreter start.
    source = tmp_path_factory.mktemp("editable") / "src"
    write(source / "mylib" / "__init__.py", "VALUE = 1\n")
    site = project.path / "site" / "site-packages"
    write(site / "__editable__.mylib-1.0.pth", f"{source}\n")
    dist_info(site, "mylib", "__editable__.mylib-1.0.pth,,\n")
    boot = project.path / "boot"
    write(boot / "sitecustomize.py", f"import site\n\nsite.addsitedir({str(site)!r})\n")
    monkeypatch.setenv("PYTHONPATH", str(boot))
    write(
        project.path / "tests" / "test_mylib.py",
        "import mylib\n\n\ndef test_value():\n    assert mylib.VALUE == 1\n",
    )
    pid = first_run(project)
    edit(source / "mylib" / "__init__.py", "VALUE = 1", "VALUE = 2")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_mylib.py::test_value"] == ("FAILED", "assert 2 == 1")
    result.stdout.fnmatch_lines(
        ["reuse: g-* re-imported *mylib/__init__.py, tests/test_mylib.py; kept db, index (*)"],
        consecutive=False,
    )
    assert replica_setups(project, {pid}) == ["db", "index"]


def test_a_package_set_up_again_after_an_edit_is_not_a_leak_of_its_first_test(
    project: pytest.Pytester,
) -> None:
    """pytest sets a package up by importing its ``__init__.py`` (prepend import mode puts the
    package's root first on ``sys.path`` again, if another directory came first). The edited
    test file, re-imported, put ``tests/`` first: the package's next setup, inside its first
    test's, reorders ``sys.path`` as it does in plain pytest. That is the collector's doing,
    not the test's: no ReuseLeakWarning."""
    write(project.path / "pkg" / "__init__.py", "")
    write(project.path / "pkg" / "test_p.py", "def test_p():\n    pass\n")
    pid = first_run(project)
    edit(project.path / "tests" / "test_core.py", "def ", "# edited\ndef ")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert "ReuseLeakWarning" not in result.stdout.str(), result.stdout.str()


def test_a_registry_another_module_filled_with_a_plain_value_is_imported_anew(
    project: pytest.Pytester,
) -> None:
    """app/plugin.py appends a string to app/registry.py's list at import: no object of the
    plugin's for a scan to trace. Edited, the plugin is re-imported, and so is the registry
    (its list grew while the plugin's top level ran), not left holding the old entry."""
    write(project.path / "app" / "registry.py", "HANDLERS = []\n")
    write(
        project.path / "app" / "plugin.py",
        "from app import registry\n\nregistry.HANDLERS.append('x')\n",
    )
    write(
        project.path / "tests" / "test_registry.py",
        "from app import plugin, registry\n\n\n"
        "def test_handlers():\n    assert registry.HANDLERS == ['x']\n",
    )
    pid = first_run(project)
    edit(project.path / "app" / "plugin.py", "'x'", "'y'")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    result.stdout.fnmatch_lines(["*FAILED tests/test_registry.py::test_handlers*"])
    edit(project.path / "app" / "plugin.py", "'y'", "'x'")  # and again: linked anew
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
