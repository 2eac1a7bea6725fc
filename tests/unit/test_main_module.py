"""A replica's ``__main__`` and ``sys.argv`` as the controller's (``replica/main_module.py``).

Each test gives the function a fresh, file-less ``__main__`` (as ``python -c`` has) and its own
``sys.argv``, both restored afterwards.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from pytest_reuse_env.controller.launcher import describe_main
from pytest_reuse_env.replica.main_module import imitate_main


@pytest.fixture
def main(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", module)
    monkeypatch.setattr(sys, "argv", ["-c"])
    return module


def test_python_dash_m_pytest_gives_pytests_main_module(main: types.ModuleType) -> None:
    imitate_main({"spec": "pytest.__main__", "file": "/elsewhere/__main__.py", "argv": ["x", "-q"]})
    expected = Path(pytest.__file__).with_name("__main__.py")
    # Found in this interpreter, not the controller's path (on another host they differ).
    assert main.__file__ == str(expected)
    assert main.__spec__ is not None
    assert main.__spec__.name == "pytest.__main__"
    assert main.__package__ == "pytest"
    assert main.__loader__ is main.__spec__.loader
    assert sys.argv == [str(expected), "-q"]


def test_a_script_gives_its_file_and_a_loader(main: types.ModuleType, tmp_path: Path) -> None:
    script = tmp_path / "pytest"
    script.write_text("import sys\n")
    imitate_main({"spec": None, "file": str(script), "argv": [str(script), "-x"]})
    assert main.__file__ == str(script)
    assert main.__loader__.get_filename("__main__") == str(script)  # type: ignore[union-attr]
    assert sys.argv == [str(script), "-x"]


def test_a_file_this_interpreter_lacks_is_left_out(main: types.ModuleType) -> None:
    imitate_main({"spec": "no_such_package.__main__", "file": "/no/such/file.py", "argv": []})
    assert not hasattr(main, "__file__"), "a child process would fail to load it"
    assert sys.argv == ["/no/such/file.py"]


def test_describe_main_reads_this_process(main: types.ModuleType) -> None:
    main.__file__ = "/bin/pytest"
    assert describe_main() == {"spec": None, "file": "/bin/pytest", "argv": ["-c"]}
