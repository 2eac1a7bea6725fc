"""Whether a function from a re-imported module provably does what its old version did.

Runs inside a replica (``conftests.py`` asks it whether a warm fixture of a re-registered
conftest may keep its value); imports only the standard library and ``replica.modgraph``.

Two functions are *the same* when their code is equal (bytecode, constants, names, arguments,
defaults; line numbers may differ: a fixture edited above another one moves it) and every global
name their code (and the code nested in it) reads is bound alike in both modules' globals:

- to the very same object, which is not and does not hold anything of an invalidated module
  (a module counts with its submodules: ``app`` stands for ``app.index``, read as an attribute);
- to equal immutable values (numbers, strings, bytes, ``None``, paths; tuples and frozensets of
  those), or
- to functions of the two modules that are the same by this very rule.

Anything else (a class or a mutable object made by the module, a closure, a wrapped function)
is not proven: the fixture is rebuilt. So is code that may read globals by a computed name
(``globals()["h"]``, ``vars()``, ``getattr(sys.modules[__name__], "h")``, ``eval``): the
names it reads are not among its code's. When in doubt, rebuild.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePath
from types import CodeType, FunctionType, ModuleType
from typing import Any, Final

from pytest_reuse_env.replica.modgraph import referenced_modules

__all__ = ["same_function"]

_IMMUTABLE: Final = (int, float, complex, str, bytes, bool, type(None), range, PurePath)
#: Names through which code may reach a module's globals by a computed name.
_DYNAMIC: Final = frozenset(
    {"globals", "vars", "eval", "exec", "__import__", "import_module", "__dict__", "modules"}
)
#: Code attributes compared as they are (line numbers and positions deliberately left out).
_CODE_FIELDS: Final = (
    "co_code",
    "co_names",
    "co_varnames",
    "co_freevars",
    "co_cellvars",
    "co_argcount",
    "co_posonlyargcount",
    "co_kwonlyargcount",
    "co_flags",
    "co_name",
)


def same_function(old: object, new: object, invalidated: set[str]) -> bool:
    """Whether ``new`` (from the re-imported module) provably behaves as ``old`` did, given the
    names of the modules invalidated by this refresh (see the module docstring)."""
    if type(old) is not FunctionType or type(new) is not FunctionType:
        return False
    return _Proof(old.__globals__, new.__globals__, invalidated).functions(old, new)


class _Proof:
    def __init__(
        self, old_globals: dict[str, Any], new_globals: dict[str, Any], invalidated: set[str]
    ) -> None:
        self.old_globals = old_globals
        self.new_globals = new_globals
        self.invalidated = invalidated
        #: Pairs assumed the same while being proven (mutual recursion between helpers).
        self.assumed: set[tuple[int, int]] = set()

    def functions(self, old: FunctionType, new: FunctionType) -> bool:
        if (id(old), id(new)) in self.assumed:
            return True
        self.assumed.add((id(old), id(new)))
        if old.__globals__ is not self.old_globals or new.__globals__ is not self.new_globals:
            return False
        if old.__closure__ or new.__closure__:
            return False
        if not same_code(old.__code__, new.__code__):
            return False
        names = global_names(old.__code__)
        if names & _DYNAMIC:
            return False
        if not self.values(old.__defaults__, new.__defaults__):
            return False
        if not self.values(old.__kwdefaults__, new.__kwdefaults__):
            return False
        for name in sorted(names):
            in_old, in_new = name in self.old_globals, name in self.new_globals
            if in_old != in_new:
                return False
            if in_old and not self.values(self.old_globals[name], self.new_globals[name]):
                return False
        return True

    def values(self, old: object, new: object) -> bool:
        if old is new:
            return self.untouched(old)
        if type(old) is not type(new):
            return False
        if isinstance(old, _IMMUTABLE):
            try:
                return bool(old == new)
            except Exception:
                return False
        if isinstance(old, tuple):
            return len(old) == len(new) and all(  # type: ignore[arg-type]
                self.values(a, b)
                for a, b in zip(old, new, strict=True)  # type: ignore[call-overload]
            )
        if isinstance(old, frozenset):
            return all(isinstance(v, _IMMUTABLE) for v in old) and old == new
        if isinstance(old, FunctionType):
            return self.functions(old, new)  # type: ignore[arg-type]
        return False

    def untouched(self, value: object) -> bool:
        """An object both modules share: it must not be or hold an invalidated module's."""
        if isinstance(value, _IMMUTABLE):
            return True
        if isinstance(value, ModuleType):
            name = value.__name__
            return not any(n == name or n.startswith(name + ".") for n in self.invalidated)
        return not (referenced_modules(value) & self.invalidated)


def same_code(old: CodeType, new: CodeType) -> bool:
    """Equal code, constants compared recursively, line numbers ignored."""
    if any(getattr(old, f) != getattr(new, f) for f in _CODE_FIELDS):
        return False
    if getattr(old, "co_exceptiontable", b"") != getattr(new, "co_exceptiontable", b""):
        return False
    if len(old.co_consts) != len(new.co_consts):
        return False
    for a, b in zip(old.co_consts, new.co_consts, strict=True):
        if isinstance(a, CodeType) and isinstance(b, CodeType):
            if not same_code(a, b):
                return False
        elif type(a) is not type(b) or not _equal_constant(a, b):
            return False
    return True


def _equal_constant(a: object, b: object) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(
            type(x) is type(y) and _equal_constant(x, y) for x, y in zip(a, b, strict=True)
        )
    try:
        return bool(a == b)
    except Exception:
        return False


def global_names(code: CodeType) -> set[str]:
    """Names the code and the code nested in it may read as globals (a superset: attribute
    names are among ``co_names`` too)."""
    return set(_names(code))


def _names(code: CodeType) -> Iterator[str]:
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _names(constant)
