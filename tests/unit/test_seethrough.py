"""Wrappers compiled by ``replica/seethrough.py``: warnings count ``stacklevel`` past them, as
past importlib's own frames, so a warning names the line that called the wrapper."""

from __future__ import annotations

import inspect
import warnings

import pytest

from pytest_reuse_env.replica import seethrough


def warn_for_caller() -> None:
    warnings.warn("for the caller", UserWarning, stacklevel=2)


def test_a_warning_names_the_line_that_called_the_wrapper() -> None:
    wrapper = seethrough.compiled(
        """
        def wrapper():
            return inner()
        """,
        {"inner": warn_for_caller},
    )["wrapper"]
    line = inspect.currentframe().f_lineno + 2  # type: ignore[union-attr]
    with pytest.warns(UserWarning, match="for the caller") as record:
        wrapper()
    assert (record[0].filename, record[0].lineno) == (__file__, line)


def test_a_plain_wrapper_would_be_named_instead() -> None:
    """What the compiled name avoids (the test above could not fail otherwise)."""

    def wrapper() -> None:
        warn_for_caller()

    with pytest.warns(UserWarning, match="for the caller") as record:
        wrapper()
    assert record[0].lineno == wrapper.__code__.co_firstlineno + 1
