"""A fake pytest parser and config for unit tests of ``options.py`` and ``settings.py``: no pytest
session, no files.

``FakeParser`` records what ``register_options`` declares; ``FakeConfig`` answers ``getini`` and
``getoption`` from values given as pytest would return them (str for "string" keys, lists for
"args" and "linelist" keys), else from the declared defaults. Reading anything undeclared fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from pytest_reuse_env.options import register_options
from pytest_reuse_env.settings import ReuseSettings


class FakeGroup:
    def __init__(self, parser: FakeParser) -> None:
        self.parser = parser

    def addoption(self, *flags: str, **attrs: Any) -> None:
        dest = attrs.get("dest") or flags[0].lstrip("-").replace("-", "_")
        assert dest not in self.parser.options, f"option dest {dest} declared twice"
        self.parser.options[dest] = attrs.get("default")
        self.parser.flags.update(dict.fromkeys(flags, dest))


class FakeParser:
    """What ``register_options`` declares: ini keys with their type and default, options."""

    def __init__(self) -> None:
        self.ini: dict[str, tuple[str, object]] = {}
        self.help: dict[str, str] = {}
        self.options: dict[str, object] = {}
        self.flags: dict[str, str] = {}

    def addini(self, name: str, help: str, type: str = "string", default: object = "") -> None:
        assert name not in self.ini, f"ini key {name} declared twice"
        assert help.strip(), f"ini key {name} has no help"
        self.ini[name] = (type, default)
        self.help[name] = help

    def getgroup(self, name: str, description: str = "") -> FakeGroup:
        return FakeGroup(self)


def declared() -> FakeParser:
    parser = FakeParser()
    register_options(cast(pytest.Parser, parser))
    return parser


class FakeConfig:
    """A config whose ini values and options are given as pytest would return them; anything
    not given is the declared default. Reading an undeclared key or option fails."""

    inipath = Path("tox.ini")

    def __init__(self, ini: Mapping[str, object] = {}, options: Mapping[str, object] = {}) -> None:
        self.parser = declared()
        for key in ini:
            assert key in self.parser.ini, f"{key} is not a declared ini key"
        for dest in options:
            assert dest in self.parser.options, f"{dest} is not a declared option"
        self.ini = dict(ini)
        self.options = dict(options)

    def getini(self, name: str) -> object:
        return self.ini[name] if name in self.ini else self.parser.ini[name][1]

    def getoption(self, name: str) -> object:
        if name == "override_ini":
            return []
        return self.options[name] if name in self.options else self.parser.options[name]


def settings_of(ini: Mapping[str, object] = {}, **options: object) -> ReuseSettings:
    return ReuseSettings.from_config(cast(pytest.Config, FakeConfig(ini, options)))
