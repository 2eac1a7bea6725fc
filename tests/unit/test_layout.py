"""The package's layout is its architecture: who may import whom, checked from the source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_reuse_env"
#: Shared modules at the top: both sides import them, so they import neither side.
SHARED = [
    "channel",
    "collection_check",
    "errors",
    "fingerprint",
    "hostspec",
    "markers",
    "options",
    "policy",
    "policy_values",
    "protocol",
    "registry",
    "registry_files",
    "record",
    "role",
    "scaling",
    "settings",
    "warm",
]


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement in ``path``, wherever it stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports_of(folder: Path) -> dict[str, set[str]]:
    return {
        str(path.relative_to(PACKAGE)): imported_modules(path)
        for path in sorted(folder.rglob("*.py"))
    }


def test_imported_modules_sees_nested_and_from_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from pytest_reuse_env import controller\n")
    assert "pytest_reuse_env.controller" in imported_modules(source)


def test_the_replica_side_never_imports_the_controller() -> None:
    offenders = {
        name: sorted(m for m in modules if m.startswith("pytest_reuse_env.controller"))
        for name, modules in imports_of(PACKAGE / "replica").items()
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) >= 5, "the replica side was found"


@pytest.mark.parametrize("name", SHARED)
def test_shared_modules_import_neither_side(name: str) -> None:
    modules = imported_modules(PACKAGE / f"{name}.py")
    sides = sorted(
        m
        for m in modules
        if m.startswith(("pytest_reuse_env.controller", "pytest_reuse_env.replica"))
    )
    assert sides == []


def test_the_plugin_imports_no_side_at_module_level() -> None:
    """``plugin.py`` loads ``controller/`` only inside the hooks that route a test."""
    tree = ast.parse((PACKAGE / "plugin.py").read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = {
        node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        for node in top_level
    }
    assert not {n for n in names if n and n.startswith("pytest_reuse_env.controller")}
    assert not {n for n in names if n and n.startswith("pytest_reuse_env.replica")}


def test_only_the_replica_handle_writes_its_state() -> None:
    """``controller/replica.py`` owns a handle's state: elsewhere it changes through methods."""
    writes = []
    for path in sorted((PACKAGE / "controller").rglob("*.py")):
        if path.name == "replica.py" and path.parent.name == "controller":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id in ("replica", "holder", "r")
                ):
                    writes.append(f"{path.relative_to(PACKAGE)}:{target.lineno}")
    assert writes == []


#: What the controller may import from the replica side: watch mode's controller catches up
#: with edits with a replica's reloader, and the summary asks which tests could run at once;
#: a forked spare's child runs the replica side's start.
CONTROLLER_USES_OF_THE_REPLICA_SIDE = {
    "controller/launch/fork.py": {"pytest_reuse_env.replica.forked"},
    "controller/watch.py": {"pytest_reuse_env.replica.reload"},
    "controller/summary.py": {"pytest_reuse_env.replica.asyncbatch.eligible"},
}


def test_the_controller_imports_from_the_replica_side_only_what_readme_says() -> None:
    found = {
        name: {
            m
            for m in modules
            if m.startswith("pytest_reuse_env.replica")
            and m.rpartition(".")[0] not in {x for x in modules if x != m}
        }
        for name, modules in imports_of(PACKAGE / "controller").items()
    }
    assert {k: v for k, v in found.items() if v} == CONTROLLER_USES_OF_THE_REPLICA_SIDE


def readme_layout() -> dict[str, set[str]]:
    """The file names README's layout picture lists at the top, under ``controller/`` and
    under ``replica/`` (their subfolders included)."""
    readme = (PACKAGE.parent / "README.rst").read_text()
    block = readme.split("The package's folders say which process a module runs in::\n", 1)[1]
    block = block.split("\n\n", 1)[0]  # the literal block, up to its first blank line
    sections: dict[str, set[str]] = {"": set(), "controller": set(), "replica": set()}
    current = ""
    for line in block.splitlines():
        folder = re.match(r"\s*(controller|replica)/", line)
        if folder is not None:
            current = folder[1]
        sections[current].update(re.findall(r"\b\w+\.py\b", line))
    return sections


def test_readme_layout_lists_every_module_and_no_other() -> None:
    listed = readme_layout()
    actual = {
        "": {p.name for p in PACKAGE.glob("*.py")},
        "controller": {p.name for p in (PACKAGE / "controller").rglob("*.py")},
        "replica": {p.name for p in (PACKAGE / "replica").rglob("*.py")},
    }
    for folder in actual:
        actual[folder].discard("__init__.py")
    assert listed == actual


def test_one_helper_runs_an_inner_pytest() -> None:
    """``tests/helpers.py`` (``run``, ``run_compat``, ``run_in_process``) is the one way the
    suite runs pytest inside a test; a test picks plugins and bounds through its arguments."""
    tests = PACKAGE.parent / "tests"
    calls = re.compile(r"\.runpytest(?:_subprocess)?\(|pytester\.run\(")
    offenders = [
        str(path.relative_to(tests))
        for path in sorted(tests.rglob("*.py"))
        if path.name not in ("helpers.py", "test_layout.py") and calls.search(path.read_text())
    ]
    assert offenders == []


def test_messages_are_made_by_protocol_builders_only() -> None:
    """Outside ``protocol.py`` no module writes a ``(protocol.NAME, payload)`` tuple by hand:
    the builders keep both sides agreeing on each payload's shape."""
    from pytest_reuse_env import protocol

    names = {
        name
        for name in dir(protocol)
        if name.isupper()
        and isinstance(getattr(protocol, name), str)
        and getattr(protocol, name) in protocol.REPLICA_MESSAGES | protocol.CONTROLLER_MESSAGES
    }
    by_hand = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "protocol.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        # ``x in (protocol.A, protocol.B)`` is a test of names, not a message.
        compared = {
            id(c) for n in ast.walk(tree) if isinstance(n, ast.Compare) for c in n.comparators
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Tuple)
                and id(node) not in compared
                and len(node.elts) == 2
                and isinstance(node.elts[0], ast.Attribute)
                and isinstance(node.elts[0].value, ast.Name)
                and node.elts[0].value.id == "protocol"
                and node.elts[0].attr in names
            ):
                by_hand.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert by_hand == []
