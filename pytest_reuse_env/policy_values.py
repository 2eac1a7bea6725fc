"""The values of policy fields: how each kind is checked, read from ini text and written back.

Durations (``300``, ``5m``, ``1h30m``), replica counts (``n`` or ``(min, max)``), counts, seconds,
limits, fixture names and host groups; every violation is a :class:`PolicyError` naming the
field, the value and the rule. ``policy.py`` declares which field uses which. This module
imports nothing from the package.
"""

from __future__ import annotations

import keyword
import math
import os
import re
from datetime import timedelta
from typing import Final, Literal, TypeGuard

SHORT_TTL_ENV: Final = "PYTEST_REUSE_ENV_ALLOW_SHORT_TTL"
#: The longest wait an ini key may ask for, in seconds: a year. Longer ones overflow the clocks
#: of threading, faulthandler and select (an OverflowError instead of a wait).
MAX_WAIT_SECONDS: Final = 365 * 24 * 3600.0
_MIN_TTL: Final = timedelta(seconds=30)
_SHORT_MIN_TTL: Final = timedelta(milliseconds=100)

# re.ASCII everywhere: int() and float() read other scripts' digits ("٣"), which are not ini text.
# Units largest first; "m" cannot swallow the "m" of "ms" because the regex backtracks.
_DURATION_RE: Final = re.compile(
    r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?(?:(?P<us>\d+)us)?",
    re.ASCII,
)
_DURATION_UNITS: Final = {
    "h": "hours",
    "m": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
}
_INT_RE: Final = re.compile(r"[+-]?\d+", re.ASCII)
_PAIR_RE: Final = re.compile(r"\(\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*\)", re.ASCII)
_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
# One token: key=value where a parenthesized value may hold spaces; it must end at a space.
TOKEN_RE: Final = re.compile(r"(?P<key>[^\s=()]+)=(?P<value>\([^()]*\)|[^\s()]*)(?=\s|$)")
# What to quote when no token matches: a whole "key=(...)" value even if it holds spaces.
BAD_TOKEN_RE: Final = re.compile(r"[^\s=]*=\([^()]*\)?\S*|\S+")


class PolicyError(ValueError):
    """A policy field breaks a rule. ``field``, ``value`` and ``rule`` say which, what and why."""

    def __init__(self, field: str, value: object, rule: str, message: str | None = None) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(message if message is not None else f"{field} {rule}, got {_show(value)}")


def _show(value: object) -> str:
    if isinstance(value, timedelta):
        return f"timedelta(seconds={value.total_seconds():g})"
    return repr(value)


def _type_error(field: str, value: object, expected: str) -> PolicyError:
    return PolicyError(
        field,
        value,
        f"must be {expected}",
        f"{field} must be {expected}, got {value!r} ({type(value).__name__})",
    )


def _text_error(field: str, text: str, expected: str) -> PolicyError:
    return PolicyError(
        field, text, f"must be {expected}", f"{field} must be {expected}, got {text!r}"
    )


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass, but True replicas or concurrency is always a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _min_ttl() -> timedelta:
    return _SHORT_MIN_TTL if os.environ.get(SHORT_TTL_ENV) == "1" else _MIN_TTL


# -- rules: (field name, value) -> the normalized value, or PolicyError -------------------------


def check_replicas(field: str, value: object) -> tuple[int, int]:
    if _is_int(value):
        if value < 1:
            raise PolicyError(field, value, "must be at least 1")
        return (value, value)
    if isinstance(value, tuple | list) and len(value) == 2 and all(_is_int(v) for v in value):
        low, high = int(value[0]), int(value[1])
        pair = (low, high)
        if low < 0:
            raise PolicyError(field, pair, "min must be >= 0")
        if low > high:
            raise PolicyError(field, pair, "min must be <= max")
        if high < 1:
            raise PolicyError(field, pair, "max must be at least 1")
        return pair
    raise _type_error(field, value, "an int or a (min, max) pair of ints")


def check_ttl(field: str, value: object) -> timedelta:
    if _is_int(value):
        try:
            ttl = timedelta(seconds=value)
        except OverflowError:
            raise PolicyError(field, value, f"must be at most {timedelta.max.days} days") from None
    elif isinstance(value, timedelta):
        ttl = value
    else:
        raise _type_error(field, value, "an int number of seconds or a timedelta")
    minimum = _min_ttl()
    if ttl < minimum:
        raise PolicyError(field, value, f"must be at least {minimum.total_seconds():g} seconds")
    return ttl


def check_count(field: str, value: object) -> int:
    if not _is_int(value):
        raise _type_error(field, value, "an int")
    if value < 1:
        raise PolicyError(field, value, "must be at least 1")
    return value


def check_scope(field: str, value: object) -> Literal["global", "run"]:
    # Spelled out so the return type stays the Literal, not str.
    if value == "global":
        return "global"
    if value == "run":
        return "run"
    raise PolicyError(field, value, "must be 'global' or 'run'")


def check_fixture_names(field: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
        raise _type_error(field, value, "a tuple of fixture names")
    names = tuple(str(v) for v in value)
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise PolicyError(
                field,
                names,
                "must hold fixture names (Python identifiers)",
                f"{field} must hold fixture names (Python identifiers), got {name!r}",
            )
    if len(set(names)) != len(names):
        raise PolicyError(field, names, "must not repeat a name")
    return names


def check_seconds(field: str, value: object) -> float | None:
    if value is None:
        return None
    if _is_int(value) or isinstance(value, float):
        if not math.isfinite(value) or value <= 0:
            raise PolicyError(field, value, "must be a finite number of seconds > 0")
        return float(value)
    raise _type_error(field, value, "a number of seconds or None")


def check_limit(field: str, value: object) -> int | None:
    if value is None:
        return None
    if not _is_int(value):
        raise _type_error(field, value, "an int or None")
    if value < 1:
        raise PolicyError(field, value, "must be at least 1")
    return value


def check_host_group(field: str, value: object) -> str | None:
    if value is None or value == "default":
        return None  # one spelling for "the ungrouped hosts", so equal policies hash equal
    if not isinstance(value, str):
        raise _type_error(field, value, "a host group name or None")
    if not value.isidentifier():
        raise PolicyError(field, value, "must be a host group name (an identifier)")
    return value


# -- ini text: parse (field name, text) -> a value for the rule; render value -> text ---------


def as_timedelta(value: int | timedelta) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def parse_duration(text: str) -> timedelta:
    """``300``, ``300s``, ``5m``, ``1h30m``, ``250ms`` -> timedelta; ``ValueError`` otherwise."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        parts = {"seconds": int(text)}
    else:
        match = _DURATION_RE.fullmatch(text)
        if not text or match is None:
            raise ValueError(f"not a duration: {text!r}")
        parts = {_DURATION_UNITS[unit]: int(n) for unit, n in match.groupdict().items() if n}
    try:
        return timedelta(**parts)
    except OverflowError:
        raise ValueError(f"not a duration: {text!r} (too long)") from None


def format_duration(value: timedelta) -> str:
    """The shortest ini spelling that :func:`parse_duration` reads back to ``value``."""
    micros = value // timedelta(microseconds=1)
    if micros % 1_000_000 == 0:
        return str(micros // 1_000_000)
    if micros % 1000 == 0:
        return f"{micros // 1000}ms"
    return f"{micros}us"


def parse_number(text: str) -> float:
    """A finite decimal number in ASCII (``2``, ``2.5``, ``1e3``) -> float; ``ValueError``
    otherwise (``nan``, ``inf``, ``1_000`` and other scripts' digits, all of which ``float()``
    would take)."""
    text = text.strip()
    if not _NUMBER_RE.fullmatch(text):
        raise ValueError(f"not a number: {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def parse_replicas(field: str, text: str) -> object:
    if _INT_RE.fullmatch(text):
        return int(text)
    pair = _PAIR_RE.fullmatch(text)
    if pair is None:
        raise _text_error(field, text, "an int or (min, max), e.g. 2 or (1, 3)")
    return (int(pair[1]), int(pair[2]))


def parse_ttl(field: str, text: str) -> object:
    if _INT_RE.fullmatch(text):
        return int(text)  # also lets "-5" reach the minimum rule, not the format rule
    try:
        ttl = parse_duration(text)
    except ValueError:
        raise _text_error(field, text, "a duration like 300, 300s, 5m or 1h30m") from None
    # Whole seconds stay an int so messages read "got 10", as the user wrote it.
    return ttl if ttl % timedelta(seconds=1) else int(ttl.total_seconds())


def parse_int(field: str, text: str) -> object:
    if not _INT_RE.fullmatch(text):
        raise _text_error(field, text, "an int")
    return int(text)


def parse_text(field: str, text: str) -> object:
    return text


def parse_names(field: str, text: str) -> object:
    # Empty means "none", so a named policy can drop its base's prewarm list.
    return tuple(name.strip() for name in text.split(",")) if text else ()


def parse_limit(field: str, text: str) -> object:
    if text.lower() == "none":
        return None
    if not _INT_RE.fullmatch(text):
        raise _text_error(field, text, "an int or none")
    return int(text)


def parse_seconds(field: str, text: str) -> object:
    if text.lower() == "none":
        return None
    if _INT_RE.fullmatch(text):
        return int(text)
    try:
        # inf and nan are numbers to float() (and then break the rule, not the format).
        return float(text) if _NUMBER_RE.fullmatch(text) else parse_duration(text).total_seconds()
    except ValueError:
        raise _text_error(field, text, "a number of seconds, a duration or none") from None


def render_replicas(value: tuple[int, int]) -> str:
    low, high = value
    return str(low) if low == high else f"({low}, {high})"


def render_seconds(seconds: float) -> str:
    # "5" reads better than "5.0"; repr keeps every digit of anything else.
    return str(int(seconds)) if seconds.is_integer() and abs(seconds) < 1e15 else repr(seconds)


# -- the table ----------------------------------------------------------------------------------
