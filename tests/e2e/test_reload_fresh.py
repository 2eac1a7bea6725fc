"""End to end: edits a warm replica cannot take in place cost a fresh replica, named in ``-v``.

The project of ``test_reload.py``; each case compares the run with a ``--reuse=off`` run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from tests.e2e.test_reload import (
    edit,
    first_run,
    project,
    same_as_plain,
    started_afresh,
    summary,
    write,
)

__all__ = ["project"]  # the fixture, shared

EXTENSION = r"""
#include <Python.h>

static PyObject *value(PyObject *self, PyObject *args) { return PyLong_FromLong(VALUE); }

static PyMethodDef methods[] = {{"value", value, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fast", NULL, -1, methods};

PyMODINIT_FUNC PyInit_fast(void) { return PyModule_Create(&module); }
"""


def compile_extension(directory: Path, value: int) -> Path:
    """``fast`` (a C extension whose ``value()`` is ``value``), built with the machine's gcc
    and moved into place whole (a loaded library is never written over)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    source = directory / "fast.c"
    source.write_text(EXTENSION)
    built = directory / f"fast-{value}.tmp"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            f"-DVALUE={value}",
            f"-I{sysconfig.get_paths()['include']}",
            str(source),
            "-o",
            str(built),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    target = directory / f"fast{suffix}"
    os.replace(built, target)
    return target


def test_an_edited_extension_module_means_a_fresh_replica(project: pytest.Pytester) -> None:
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if shutil.which("gcc") is None or not include.exists():
        pytest.skip("needs gcc and Python.h to build a C extension")
    library = compile_extension(project.path, 1)
    write(
        project.path / "tests" / "test_fast.py",
        "import fast\n\n\ndef test_value():\n    assert fast.value() == 1\n",
    )
    pid = first_run(project)
    compile_extension(project.path, 2)
    result, env = same_as_plain(project)
    assert summary(result)["tests/test_fast.py::test_value"] == ("FAILED", "assert 2 == 1")
    new = started_afresh(
        result, env, f"{library.name} changed (an extension module cannot be re-imported)"
    )
    assert new != pid


def test_a_test_module_that_fails_to_collect_only_in_the_replica_is_named(
    project: pytest.Pytester,
) -> None:
    # Collected twice in one process, it raises: the replica's re-collection fails, a fresh
    # process's (the controller's) does not. (Kept in sys, not in a project registry: that
    # one would be imported anew with it.)
    write(
        project.path / "tests" / "test_models.py",
        """
        import sys

        if getattr(sys, "_reuse_test_models", False):
            raise RuntimeError("collected twice")
        sys._reuse_test_models = True
        EXPECT = 1


        def test_expect():
            assert EXPECT == 1
        """,
    )
    pid = first_run(project)
    edit(project.path / "tests" / "test_models.py", "EXPECT = 1", "EXPECT = 2")
    result, env = same_as_plain(project)
    assert summary(result)["tests/test_models.py::test_expect"] == ("FAILED", "assert 2 == 1")
    new = started_afresh(
        result,
        env,
        "collecting tests/test_models.py failed in it, not here: RuntimeError: collected twice",
    )
    assert new != pid
