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

Each field is declared once, in the class body, with :func:`_field`: its type and default, its
rule (``check``), how its ini text is read (``parse``) and written (``render``), its ini key,
command-line option and help, whether a replica needs it in its start payload and whether it is
part of the environment's identity. :data:`FIELDS` lists those declarations; ``ReusePolicy``'s
validation, :meth:`ReusePolicy.describe`, :meth:`ReusePolicy.identity`,
:meth:`ReusePolicy.payload` and the ini keys and options of ``options.py`` are derived from it.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast, final

from pytest_reuse_env.policy_values import (
    BAD_TOKEN_RE,
    MAX_WAIT_SECONDS,
    SHORT_TTL_ENV,
    TOKEN_RE,
    PolicyError,
    as_timedelta,
    check_count,
    check_fixture_names,
    check_host_group,
    check_limit,
    check_replicas,
    check_scope,
    check_seconds,
    check_ttl,
    format_duration,
    parse_duration,
    parse_int,
    parse_limit,
    parse_names,
    parse_number,
    parse_replicas,
    parse_seconds,
    parse_text,
    parse_ttl,
    render_replicas,
    render_seconds,
)

if TYPE_CHECKING:
    from pytest_reuse_env.protocol import PolicyPayload

__all__ = [
    "FIELDS",
    "MAX_WAIT_SECONDS",
    "SHORT_TTL_ENV",
    "PolicyError",
    "PolicyField",
    "ReusePolicy",
    "format_duration",
    "parse_duration",
    "parse_field",
    "parse_number",
]

_T = TypeVar("_T")
_METADATA_KEY: Final = "pytest_reuse_env"


@final
@dataclass(frozen=True)
class PolicyField:
    """Everything about one policy field; :data:`FIELDS` holds one per field of ``ReusePolicy``."""

    name: str
    default: object
    check: Callable[[str, Any], object]
    """The rule: ``(name, value)`` to the normalized value, or :class:`PolicyError`."""
    parse: Callable[[str, str], object]
    """Ini text (stripped) to a value for ``check``, or :class:`PolicyError` for its shape."""
    render: Callable[[Any], str]
    """A normalized value to the ini text ``parse`` reads back (used by ``describe()``)."""
    wire: Callable[[Any], object] | None
    """A normalized value to its start-payload builtin; None: a replica does not need it."""
    help: str
    """What it means and its rule, as the ini help says it (without the default)."""
    example: str
    """A valid value other than the default, in ini form (for docs and the field tests)."""
    ini: Literal["string", "args"] | None
    """The pytest type of its ini key ``reuse_<name>`` for the default policy; None: no key."""
    option: bool
    """Whether ``--reuse-<name>`` (dest ``reuse_cli_<name>``) overrides the ini key."""
    omit_default: bool
    """``describe()`` leaves it out while it holds its default (else always shows it)."""
    identity: bool
    """Part of :meth:`ReusePolicy.identity`: warm replicas are only shared when it is equal."""

    @property
    def replica(self) -> bool:
        """Whether a replica needs it: it is then in the start payload (``PolicyPayload``)."""
        return self.wire is not None

    @property
    def ini_key(self) -> str | None:
        return f"reuse_{self.name}" if self.ini is not None else None

    @property
    def flag(self) -> str | None:
        return f"--reuse-{self.name.replace('_', '-')}" if self.option else None

    @property
    def dest(self) -> str | None:
        return f"reuse_cli_{self.name}" if self.option else None

    @property
    def default_text(self) -> str:
        """The default as the help says it: its ini form, or ``none``."""
        if self.omit_default:
            return "none"
        return self.render(self.check(self.name, self.default))


def _field(
    default: _T,
    *,
    check: Callable[[str, Any], object],
    parse: Callable[[str, str], object],
    render: Callable[[Any], str] = str,
    wire: Callable[[Any], object] | None = None,
    help: str,
    example: str,
    ini: Literal["string", "args"] | None = "string",
    option: bool = False,
    omit_default: bool = False,
    identity: bool = True,
) -> _T:
    """One field of ``ReusePolicy``, declared once: its default, and everything else kept in the
    dataclass field's metadata for :data:`FIELDS` (typed as the default, for the type checker)."""
    spec = PolicyField(
        "", default, check, parse, render, wire, help, example, ini, option, omit_default, identity
    )
    return dataclasses.field(default=default, metadata={_METADATA_KEY: spec})


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


def _as_is(value: object) -> object:
    return value


@final
@dataclass(frozen=True)
class ReusePolicy:
    """How an environment of warm replicas is sized, shared and retired (see the module doc and
    each field's ``help`` in :data:`FIELDS`)."""

    replicas: int | tuple[int, int] = _field(
        2,
        check=check_replicas,
        parse=parse_replicas,
        render=render_replicas,
        wire=tuple,  # the detached replica retires itself by the scaling rules
        help="replicas of the default reuse policy: N or (MIN, MAX); each >= 0, MIN <= MAX, "
        "MAX >= 1",
        example="(1, 3)",
        option=True,
    )
    idle_ttl: int | timedelta = _field(
        30,
        check=check_ttl,
        parse=parse_ttl,
        render=format_duration,
        wire=_seconds,
        help="shut an environment's replicas down after it has been idle this long: seconds or "
        "a duration like 5m, 1h30m; at least 30 s",
        example="5m",
        option=True,
    )
    concurrency: int = _field(
        1,
        check=check_count,
        parse=parse_int,
        wire=int,
        help="tests one replica runs at once, >= 1",
        example="4",
        option=True,
    )
    scaledown_ttl: int | timedelta = _field(
        30,
        check=check_ttl,
        parse=parse_ttl,
        render=format_duration,
        wire=_seconds,
        help="delay before one idle replica above the minimum is removed: seconds or a "
        "duration; at least 30 s",
        example="90",
        option=True,
    )
    scope: Literal["global", "run"] = _field(
        "global",
        check=check_scope,
        parse=parse_text,
        help="'global' (replicas outlive the run) or 'run'",
        example="run",
        option=True,
    )
    prewarm: tuple[str, ...] = _field(
        (),
        check=check_fixture_names,
        parse=parse_names,
        render=",".join,
        wire=list,
        help="session fixtures a new replica sets up before its first test: fixture names",
        example="db,model",
        ini="args",
        omit_default=True,
    )
    timeout: float | None = _field(
        None,
        check=check_seconds,
        parse=parse_seconds,
        render=render_seconds,
        wire=_as_is,
        help="per-test timeout in seconds for tests run in replicas, > 0",
        example="2.5",
        omit_default=True,
    )
    max_tests_per_replica: int | None = _field(
        None,
        check=check_limit,
        parse=parse_limit,
        wire=_as_is,
        help="recycle a replica after this many tests (plus up to 10 % jitter), checked between "
        "tests: an int >= 1",
        example="100",
        omit_default=True,
    )
    max_memory_per_replica: int | None = _field(
        None,
        check=check_limit,
        parse=parse_limit,
        wire=_as_is,
        help="recycle a replica whose resident size passes this many MiB, checked between "
        "tests: an int >= 1",
        example="512",
        omit_default=True,
    )
    hosts: str | None = _field(
        None,
        check=check_host_group,
        parse=parse_text,
        help="the host group (reuse_hosts) its replicas run on: a group name, 'local' for this "
        "machine, or 'default' for the ungrouped hosts (this machine when there are none)",
        example="local",
        ini=None,  # reuse_hosts is the host table itself; a policy names a group of it
        omit_default=True,
    )

    def __post_init__(self) -> None:
        # Frozen: normalized values go in through object.__setattr__, validated field by field.
        for spec in FIELDS:
            object.__setattr__(self, spec.name, spec.check(spec.name, getattr(self, spec.name)))

    @property
    def min_replicas(self) -> int:
        return check_replicas("replicas", self.replicas)[0]

    @property
    def max_replicas(self) -> int:
        return check_replicas("replicas", self.replicas)[1]

    @property
    def idle_ttl_seconds(self) -> float:
        return as_timedelta(self.idle_ttl).total_seconds()

    @property
    def scaledown_ttl_seconds(self) -> float:
        return as_timedelta(self.scaledown_ttl).total_seconds()

    def with_changes(self, **changes: object) -> ReusePolicy:
        """A copy with ``changes`` applied, validated like a new policy."""
        return ReusePolicy.from_mapping(changes, base=self)

    def describe(self) -> str:
        """The canonical ini form; ``ReusePolicy.parse(p.describe()) == p``."""
        return self._render(FIELDS)

    def identity(self) -> str:
        """What the warm registry keys an environment by: the ini form of the identity fields."""
        return self._render(spec for spec in FIELDS if spec.identity)

    def payload(self) -> PolicyPayload:
        """The fields a replica needs, as builtins for its start payload."""
        return cast(
            "PolicyPayload",
            {name: wire(getattr(self, name)) for name, wire in _REPLICA_FIELDS},
        )

    def _render(self, fields: Iterable[PolicyField]) -> str:
        parts = []
        for spec in fields:
            value = getattr(self, spec.name)
            if not (spec.omit_default and value == spec.default):
                parts.append(f"{spec.name}={spec.render(value)}")
        return " ".join(parts)

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, object], *, base: ReusePolicy | None = None
    ) -> ReusePolicy:
        """A policy from field values (marker kwargs); unspecified fields come from ``base``."""
        for key, value in values.items():
            if key not in _BY_NAME:
                raise PolicyError(
                    key,
                    value,
                    "is not a policy field",
                    f"unknown policy field {key!r}: known fields are {_NAMES}",
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
            match = TOKEN_RE.match(text, pos)
            if match is None:
                bad = BAD_TOKEN_RE.match(text, pos)
                token = bad[0] if bad is not None else text[pos:]
                raise PolicyError(
                    "policy",
                    token,
                    "must be key=value",
                    f"malformed token {token!r}: expected key=value, e.g. replicas=(1, 3)",
                )
            key, raw = match["key"], match["value"]
            if key not in _BY_NAME:
                raise PolicyError(
                    key,
                    match[0],
                    "is not a policy field",
                    f"unknown key {key!r} in {match[0]!r}: known keys are {_NAMES}",
                )
            if key in values:
                raise PolicyError(
                    key, match[0], "may be given once", f"duplicate key {key!r} in {match[0]!r}"
                )
            values[key] = parse_field(key, raw)
            pos = match.end()
        return cls.from_mapping(values, base=base)


def _table() -> tuple[PolicyField, ...]:
    specs = []
    for field in dataclasses.fields(ReusePolicy):
        spec = field.metadata.get(_METADATA_KEY)
        if not isinstance(spec, PolicyField):
            raise TypeError(f"ReusePolicy.{field.name} is not declared with _field()")
        if spec.wire is not None and not spec.identity:
            # A warm replica keeps what it was started with: sharing it needs equal values.
            raise TypeError(f"ReusePolicy.{field.name}: a field replicas need is identity")
        specs.append(dataclasses.replace(spec, name=field.name))
    return tuple(specs)


#: One entry per field of ``ReusePolicy``, in declaration order: the single table of fields.
FIELDS: Final[tuple[PolicyField, ...]] = _table()
_BY_NAME: Final = {spec.name: spec for spec in FIELDS}
_NAMES: Final = ", ".join(_BY_NAME)
_REPLICA_FIELDS: Final = tuple((spec.name, spec.wire) for spec in FIELDS if spec.wire is not None)


def parse_field(field: str, text: str) -> object:
    """One field's value from its ini text, not yet validated (``ReusePolicy`` does that).

    Raises :class:`PolicyError` for an unknown field or text of the wrong shape.
    """
    spec = _BY_NAME.get(field)
    if spec is None:
        raise PolicyError(
            field,
            text,
            "is not a policy field",
            f"unknown key {field!r}: known keys are {_NAMES}",
        )
    return spec.parse(field, text.strip())
