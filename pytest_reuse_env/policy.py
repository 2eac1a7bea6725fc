"""``ReusePolicy``: how many warm replicas an environment keeps, how busy, and for how long.

A policy is a frozen, hashable value: tests whose policies are equal share one environment.
Its fields and rules follow Flyte 2's ``ReusePolicy``:

- ``replicas``: ``n`` (meaning ``(n, n)``) or ``(min, max)``; each >= 0, min <= max, max >= 1.
- ``idle_ttl``: seconds (``int``) or ``timedelta``, at least 30 seconds. Once the whole
  environment has been idle this long, all of its replicas shut down.
- ``concurrency``: tests one replica runs at once, an ``int`` >= 1.
- ``scaledown_ttl``: seconds or ``timedelta``, at least 30 seconds. The delay before one idle
  replica above the minimum is removed.
- ``scope``: ``"global"`` (replicas outlive the run) or ``"run"`` (each run its own replicas).
- ``prewarm``: names of session fixtures a new replica sets up before its first test.
- ``timeout``: per-test timeout in seconds for tests in this environment, or ``None``.
- ``hosts``: the host group (``reuse_hosts``) its replicas run on: a name, ``local`` for this
  machine, or ``None``/``default`` for the ungrouped hosts (this machine when there are none).

Values are normalized on construction (``replicas`` to a ``(min, max)`` tuple, TTLs to
``timedelta``, ``prewarm`` to a tuple, ``timeout`` to ``float``), so ``ReusePolicy(replicas=2)``
equals and hashes like ``ReusePolicy(replicas=(2, 2))``. Every violation raises
:class:`PolicyError`, naming the field, the value and the rule.

The ini form, read by :meth:`ReusePolicy.parse` and written by :meth:`ReusePolicy.describe`, is
whitespace-separated ``key=value`` tokens::

    replicas=(1, 3) idle_ttl=5m concurrency=1 scope=run prewarm=db,model timeout=2.5

Durations are written ``300``, ``300s``, ``5m``, ``1h``, ``1h30m`` (units ``h``, ``m``, ``s``,
``ms``, ``us``, largest first).

Test-only: when the environment variable ``PYTEST_REUSE_ENV_ALLOW_SHORT_TTL`` is ``1``, the
30-second TTL minimums drop to 0.1 seconds, so this project's own tests can exercise real TTL
expiry without waiting 30 s (``timedelta(milliseconds=...)`` gives short TTLs). It is read each
time a policy is validated. It is not a user feature: for users the 30-second minimums stay.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal, TypeGuard, final

__all__ = [
    "SHORT_TTL_ENV",
    "PolicyError",
    "ReusePolicy",
    "format_duration",
    "parse_duration",
    "parse_field",
]

SHORT_TTL_ENV: Final = "PYTEST_REUSE_ENV_ALLOW_SHORT_TTL"
_MIN_TTL: Final = timedelta(seconds=30)
_SHORT_MIN_TTL: Final = timedelta(milliseconds=100)
_FIELDS: Final = (
    "replicas",
    "idle_ttl",
    "concurrency",
    "scaledown_ttl",
    "scope",
    "prewarm",
    "timeout",
    "max_tests_per_replica",
    "max_memory_per_replica",
    "hosts",
)

# Units largest first; "m" cannot swallow the "m" of "ms" because the regex backtracks.
_DURATION_RE: Final = re.compile(
    r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?(?:(?P<us>\d+)us)?"
)
_DURATION_UNITS: Final = {
    "h": "hours",
    "m": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
}
_INT_RE: Final = re.compile(r"[+-]?\d+")
_PAIR_RE: Final = re.compile(r"\(\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*\)")
_NUMBER_RE: Final = re.compile(r"[0-9.eE+-]+")
# One token: key=value where a parenthesized value may hold spaces; it must end at a space.
_TOKEN_RE: Final = re.compile(r"(?P<key>[^\s=()]+)=(?P<value>\([^()]*\)|[^\s()]*)(?=\s|$)")
# What to quote when no token matches: a whole "key=(...)" value even if it holds spaces.
_BAD_TOKEN_RE: Final = re.compile(r"[^\s=]*=\([^()]*\)?\S*|\S+")


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


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass, but True replicas or concurrency is always a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _min_ttl() -> timedelta:
    return _SHORT_MIN_TTL if os.environ.get(SHORT_TTL_ENV) == "1" else _MIN_TTL


def _check_replicas(value: object) -> tuple[int, int]:
    if _is_int(value):
        if value < 1:
            raise PolicyError("replicas", value, "must be at least 1")
        return (value, value)
    if isinstance(value, tuple | list) and len(value) == 2 and all(_is_int(v) for v in value):
        low, high = int(value[0]), int(value[1])
        pair = (low, high)
        if low < 0:
            raise PolicyError("replicas", pair, "min must be >= 0")
        if low > high:
            raise PolicyError("replicas", pair, "min must be <= max")
        if high < 1:
            raise PolicyError("replicas", pair, "max must be at least 1")
        return pair
    raise _type_error("replicas", value, "an int or a (min, max) pair of ints")


def _check_ttl(field: str, value: object) -> timedelta:
    if _is_int(value):
        ttl = timedelta(seconds=value)
    elif isinstance(value, timedelta):
        ttl = value
    else:
        raise _type_error(field, value, "an int number of seconds or a timedelta")
    minimum = _min_ttl()
    if ttl < minimum:
        raise PolicyError(field, value, f"must be at least {minimum.total_seconds():g} seconds")
    return ttl


def _check_concurrency(value: object) -> int:
    if not _is_int(value):
        raise _type_error("concurrency", value, "an int")
    if value < 1:
        raise PolicyError("concurrency", value, "must be at least 1")
    return value


def _check_scope(value: object) -> Literal["global", "run"]:
    # Spelled out so the return type stays the Literal, not str.
    if value == "global":
        return "global"
    if value == "run":
        return "run"
    raise PolicyError("scope", value, "must be 'global' or 'run'")


def _check_prewarm(value: object) -> tuple[str, ...]:
    if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
        raise _type_error("prewarm", value, "a tuple of fixture names")
    names = tuple(str(v) for v in value)
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise PolicyError(
                "prewarm",
                names,
                "must hold fixture names (Python identifiers)",
                f"prewarm must hold fixture names (Python identifiers), got {name!r}",
            )
    if len(set(names)) != len(names):
        raise PolicyError("prewarm", names, "must not repeat a name")
    return names


def _check_timeout(value: object) -> float | None:
    if value is None:
        return None
    if _is_int(value) or isinstance(value, float):
        if not math.isfinite(value) or value <= 0:
            raise PolicyError("timeout", value, "must be a finite number of seconds > 0")
        return float(value)
    raise _type_error("timeout", value, "a number of seconds or None")


def _check_limit(field: str, value: object) -> int | None:
    if value is None:
        return None
    if not _is_int(value):
        raise _type_error(field, value, "an int or None")
    if value < 1:
        raise PolicyError(field, value, "must be at least 1")
    return value


def _check_hosts(value: object) -> str | None:
    if value is None or value == "default":
        return None  # one spelling for "the ungrouped hosts", so equal policies hash equal
    if not isinstance(value, str):
        raise _type_error("hosts", value, "a host group name or None")
    if not value.isidentifier():
        raise PolicyError("hosts", value, "must be a host group name (an identifier)")
    return value


@final
@dataclass(frozen=True)
class ReusePolicy:
    """How an environment of warm replicas is sized, shared and retired (see the module doc)."""

    replicas: int | tuple[int, int] = 2
    """``n`` means ``(n, n)``; stored as ``(min, max)``; each >= 0, min <= max, max >= 1."""
    idle_ttl: int | timedelta = 30
    """Seconds or timedelta, >= 30 s; stored as timedelta. Whole environment idle: all stop."""
    concurrency: int = 1
    """Tests one replica runs at once, >= 1."""
    scaledown_ttl: int | timedelta = 30
    """Seconds or timedelta, >= 30 s; stored as timedelta. Delay before one idle replica stops."""
    scope: Literal["global", "run"] = "global"
    """``"global"``: replicas outlive the run; ``"run"``: each run gets its own."""
    prewarm: tuple[str, ...] = ()
    """Session fixtures a new replica sets up before its first test; stored as a tuple."""
    timeout: float | None = None
    """Per-test timeout in seconds (> 0), or None for none; stored as float."""
    max_tests_per_replica: int | None = None
    """Recycle a replica after this many tests (>= 1, plus up to 10 % jitter), or None."""
    max_memory_per_replica: int | None = None
    """Recycle a replica whose resident size passes this many MiB (>= 1), or None."""
    hosts: str | None = None
    """Host group its replicas run on (``reuse_hosts``); ``local``: this machine; None: the
    ungrouped hosts, or this machine when there are none."""

    def __post_init__(self) -> None:
        # Frozen: normalized values go in through object.__setattr__, validated field by field.
        object.__setattr__(self, "replicas", _check_replicas(self.replicas))
        object.__setattr__(self, "idle_ttl", _check_ttl("idle_ttl", self.idle_ttl))
        object.__setattr__(self, "concurrency", _check_concurrency(self.concurrency))
        object.__setattr__(self, "scaledown_ttl", _check_ttl("scaledown_ttl", self.scaledown_ttl))
        object.__setattr__(self, "scope", _check_scope(self.scope))
        object.__setattr__(self, "prewarm", _check_prewarm(self.prewarm))
        object.__setattr__(self, "timeout", _check_timeout(self.timeout))
        for name in ("max_tests_per_replica", "max_memory_per_replica"):
            object.__setattr__(self, name, _check_limit(name, getattr(self, name)))
        object.__setattr__(self, "hosts", _check_hosts(self.hosts))

    @property
    def min_replicas(self) -> int:
        return _check_replicas(self.replicas)[0]

    @property
    def max_replicas(self) -> int:
        return _check_replicas(self.replicas)[1]

    @property
    def idle_ttl_seconds(self) -> float:
        return _as_timedelta(self.idle_ttl).total_seconds()

    @property
    def scaledown_ttl_seconds(self) -> float:
        return _as_timedelta(self.scaledown_ttl).total_seconds()

    def with_changes(self, **changes: object) -> ReusePolicy:
        """A copy with ``changes`` applied, validated like a new policy."""
        return ReusePolicy.from_mapping(changes, base=self)

    def describe(self) -> str:
        """The canonical ini form; ``ReusePolicy.parse(p.describe()) == p``."""
        low, high = self.min_replicas, self.max_replicas
        parts = [
            f"replicas={low}" if low == high else f"replicas=({low}, {high})",
            f"idle_ttl={format_duration(_as_timedelta(self.idle_ttl))}",
            f"concurrency={self.concurrency}",
            f"scaledown_ttl={format_duration(_as_timedelta(self.scaledown_ttl))}",
            f"scope={self.scope}",
        ]
        if self.prewarm:
            parts.append(f"prewarm={','.join(self.prewarm)}")
        if self.timeout is not None:
            parts.append(f"timeout={_format_seconds(self.timeout)}")
        for name in ("max_tests_per_replica", "max_memory_per_replica"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)}")
        if self.hosts is not None:
            parts.append(f"hosts={self.hosts}")
        return " ".join(parts)

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, object], *, base: ReusePolicy | None = None
    ) -> ReusePolicy:
        """A policy from field values (marker kwargs); unspecified fields come from ``base``."""
        for key, value in values.items():
            if key not in _FIELDS:
                raise PolicyError(
                    key,
                    value,
                    "is not a policy field",
                    f"unknown policy field {key!r}: known fields are {', '.join(_FIELDS)}",
                )
        # Any: the values are checked by __post_init__, not by the type checker.
        changes: dict[str, Any] = dict(values)
        return dataclasses.replace(base if base is not None else cls(), **changes)

    @classmethod
    def parse(cls, text: str, *, base: ReusePolicy | None = None) -> ReusePolicy:
        """A policy from its ini form; unspecified fields come from ``base``, else defaults."""
        values: dict[str, object] = {}
        pos = 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                break
            match = _TOKEN_RE.match(text, pos)
            if match is None:
                bad = _BAD_TOKEN_RE.match(text, pos)
                token = bad[0] if bad is not None else text[pos:]
                raise PolicyError(
                    "policy",
                    token,
                    "must be key=value",
                    f"malformed token {token!r}: expected key=value, e.g. replicas=(1, 3)",
                )
            key, raw = match["key"], match["value"]
            if key not in _FIELDS:
                raise PolicyError(
                    key,
                    match[0],
                    "is not a policy field",
                    f"unknown key {key!r} in {match[0]!r}: known keys are {', '.join(_FIELDS)}",
                )
            if key in values:
                raise PolicyError(
                    key, match[0], "may be given once", f"duplicate key {key!r} in {match[0]!r}"
                )
            values[key] = parse_field(key, raw)
            pos = match.end()
        return cls.from_mapping(values, base=base)


def _as_timedelta(value: int | timedelta) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def parse_duration(text: str) -> timedelta:
    """``300``, ``300s``, ``5m``, ``1h30m``, ``250ms`` -> timedelta; ``ValueError`` otherwise."""
    text = text.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"not a duration: {text!r}")
    parts = {_DURATION_UNITS[unit]: int(n) for unit, n in match.groupdict().items() if n}
    return timedelta(**parts)


def format_duration(value: timedelta) -> str:
    """The shortest ini spelling that :func:`parse_duration` reads back to ``value``."""
    micros = value // timedelta(microseconds=1)
    if micros % 1_000_000 == 0:
        return str(micros // 1_000_000)
    if micros % 1000 == 0:
        return f"{micros // 1000}ms"
    return f"{micros}us"


def _format_seconds(seconds: float) -> str:
    # "5" reads better than "5.0"; repr keeps every digit of anything else.
    return str(int(seconds)) if seconds.is_integer() and abs(seconds) < 1e15 else repr(seconds)


def parse_field(field: str, text: str) -> object:
    """One field's value from its ini text, not yet validated (``ReusePolicy`` does that).

    Raises :class:`PolicyError` for an unknown field or text of the wrong shape.
    """
    text = text.strip()
    if field == "replicas":
        if _INT_RE.fullmatch(text):
            return int(text)
        pair = _PAIR_RE.fullmatch(text)
        if pair is None:
            raise _text_error(field, text, "an int or (min, max), e.g. 2 or (1, 3)")
        return (int(pair[1]), int(pair[2]))
    if field in ("idle_ttl", "scaledown_ttl"):
        if _INT_RE.fullmatch(text):
            return int(text)  # also lets "-5" reach the minimum rule, not the format rule
        try:
            ttl = parse_duration(text)
        except ValueError:
            raise _text_error(field, text, "a duration like 300, 300s, 5m or 1h30m") from None
        # Whole seconds stay an int so messages read "got 10", as the user wrote it.
        return ttl if ttl % timedelta(seconds=1) else int(ttl.total_seconds())
    if field == "concurrency":
        if not _INT_RE.fullmatch(text):
            raise _text_error(field, text, "an int")
        return int(text)
    if field in ("scope", "hosts"):
        return text
    if field == "prewarm":
        # Empty means "none", so a named policy can drop its base's prewarm list.
        return tuple(name.strip() for name in text.split(",")) if text else ()
    if field in ("max_tests_per_replica", "max_memory_per_replica"):
        if text.lower() == "none":
            return None
        if not _INT_RE.fullmatch(text):
            raise _text_error(field, text, "an int or none")
        return int(text)
    if field == "timeout":
        if text.lower() == "none":
            return None
        if _INT_RE.fullmatch(text):
            return int(text)
        try:
            return (
                float(text) if _NUMBER_RE.fullmatch(text) else parse_duration(text).total_seconds()
            )
        except ValueError:
            raise _text_error(field, text, "a number of seconds, a duration or none") from None
    raise PolicyError(
        field,
        text,
        "is not a policy field",
        f"unknown key {field!r}: known keys are {', '.join(_FIELDS)}",
    )


def _text_error(field: str, text: str, expected: str) -> PolicyError:
    return PolicyError(
        field, text, f"must be {expected}", f"{field} must be {expected}, got {text!r}"
    )
