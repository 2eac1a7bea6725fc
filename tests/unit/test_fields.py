"""policy.FIELDS is the one table of policy fields: every way a field gets in (ini key, option,
named policy line, marker kwargs) and every way it goes out (describe(), identity(), the start
payload a replica reads) is derived from it, and round-trips for each field.

The fake parser and config (``tests/unit/fakeconfig.py``) hold exactly what
``register_options`` declared, so a key or option the table forgets is missing here too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, cast

import execnet
import pytest

from pytest_reuse_env import fingerprint, protocol
from pytest_reuse_env.markers import resolve_item_policy, resolve_policies
from pytest_reuse_env.options import INI_KEYS
from pytest_reuse_env.policy import FIELDS, SHORT_TTL_ENV, PolicyField, ReusePolicy, parse_field
from tests.unit.fakeconfig import declared, settings_of


@pytest.fixture(autouse=True)
def _long_ttl_minimums(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHORT_TTL_ENV, raising=False)


class FakeItem:
    nodeid = "test_x.py::test_y"

    def __init__(self, mark: pytest.Mark) -> None:
        self.mark = mark

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return self.mark if name == "reuse" else None


#: How the replica side reads each field from its start payload, as the policy's value: the
#: replica's session (prewarm, concurrency, timeout), hygiene's recycling limits and the
#: detached replica's scaling (replicas, TTLs in seconds).
REPLICA_READS: Final[dict[str, Callable[[protocol.PolicyPayload], object]]] = {
    "replicas": lambda p: (p["replicas"][0], p["replicas"][1]),
    "idle_ttl": lambda p: timedelta(seconds=p["idle_ttl"]),
    "concurrency": lambda p: p["concurrency"],
    "scaledown_ttl": lambda p: timedelta(seconds=p["scaledown_ttl"]),
    "prewarm": lambda p: tuple(p["prewarm"]),
    "timeout": lambda p: p["timeout"],
    "max_tests_per_replica": lambda p: p["max_tests_per_replica"],
    "max_memory_per_replica": lambda p: p["max_memory_per_replica"],
}

BY_NAME: Final = {spec.name: spec for spec in FIELDS}


def example_policy(spec: PolicyField) -> ReusePolicy:
    """The default policy with ``spec``'s example value: it differs in that field only."""
    return ReusePolicy().with_changes(**{spec.name: parse_field(spec.name, spec.example)})


@pytest.fixture(params=FIELDS, ids=[spec.name for spec in FIELDS])
def spec(request: pytest.FixtureRequest) -> PolicyField:
    return cast(PolicyField, request.param)


class TestEveryFieldRoundTrips:
    def test_example_is_not_the_default(self, spec: PolicyField) -> None:
        assert getattr(example_policy(spec), spec.name) != getattr(ReusePolicy(), spec.name)
        assert example_policy(spec) != ReusePolicy()

    def test_from_its_ini_key(self, spec: PolicyField) -> None:
        if spec.ini_key is None:
            pytest.skip(f"{spec.name} has no ini key of its own (it is set per policy)")
        expected = example_policy(spec)
        value: object = spec.example
        if spec.ini == "args":  # pytest hands the key's shell-split words
            value = list(getattr(expected, spec.name))
        assert settings_of({spec.ini_key: value}).default_policy == expected

    def test_from_a_named_policy_line(self, spec: PolicyField) -> None:
        line = f"p: {spec.name}={spec.example}"
        assert settings_of({"reuse_policies": [line]}).named["p"] == example_policy(spec)

    def test_from_its_option_over_the_ini_key(self, spec: PolicyField) -> None:
        if spec.dest is None:
            pytest.skip(f"{spec.name} has no command-line option")
        assert spec.ini_key is not None
        ini = {spec.ini_key: spec.render(spec.check(spec.name, spec.default))}
        settings = settings_of(ini, **{spec.dest: spec.example})
        assert settings.default_policy == example_policy(spec)

    def test_from_marker_kwargs(self, spec: PolicyField) -> None:
        value = getattr(example_policy(spec), spec.name)
        item = FakeItem(pytest.mark.reuse(**{spec.name: value}).mark)
        policy = resolve_item_policy(cast(pytest.Item, item), settings_of())
        assert policy == example_policy(spec)

    def test_through_describe(self, spec: PolicyField) -> None:
        policy = example_policy(spec)
        assert f"{spec.name}=" in policy.describe()
        assert policy.describe() != ReusePolicy().describe()
        assert ReusePolicy.parse(policy.describe()) == policy
        shown = f"{spec.name}=" in ReusePolicy().describe()
        assert shown is not spec.omit_default

    def test_through_identity(self, spec: PolicyField) -> None:
        policy, default = example_policy(spec), ReusePolicy()
        key = fingerprint.environment_key(policy.identity(), {"code": "same"})
        default_key = fingerprint.environment_key(default.identity(), {"code": "same"})
        if spec.identity:
            assert policy.identity() != default.identity()
            assert key != default_key, "warm replicas of either would be shared"
        else:
            assert policy.identity() == default.identity()
            assert key == default_key

    def test_through_the_start_payload(self, spec: PolicyField) -> None:
        policy = example_policy(spec)
        # What a replica receives: the payload after execnet's serializer, as on the wire.
        payload = execnet.loads(execnet.dumps(policy.payload()))
        assert payload == policy.payload()
        if not spec.replica:
            assert spec.name not in payload
            return
        assert REPLICA_READS[spec.name](payload) == getattr(policy, spec.name)
        default: dict[str, object] = dict(ReusePolicy().payload())
        assert payload[spec.name] != default[spec.name]


def test_replica_reads_cover_the_payload_fields() -> None:
    # A field a replica needs must say how the replica reads it (add it to REPLICA_READS).
    wired = {spec.name for spec in FIELDS if spec.replica}
    assert set(REPLICA_READS) == wired
    assert set(protocol.PolicyPayload.__annotations__) == wired
    assert set(ReusePolicy().payload()) == wired


def test_a_field_a_replica_needs_is_part_of_the_identity() -> None:
    # A warm replica keeps the values it was started with: it is only shared when they match.
    assert all(spec.identity for spec in FIELDS if spec.replica)


def test_fields_are_the_dataclass_fields_in_order() -> None:
    assert [spec.name for spec in FIELDS] == [f.name for f in dataclasses.fields(ReusePolicy)]
    assert ReusePolicy() == ReusePolicy.from_mapping({spec.name: spec.default for spec in FIELDS})


@pytest.mark.parametrize("name", [spec.name for spec in FIELDS])
def test_policies_differing_in_one_identity_field_differ_in_identity(name: str) -> None:
    """Against every other field's example too, so no two fields render alike."""
    spec = BY_NAME[name]
    for other in FIELDS:
        base = example_policy(other)
        if base == example_policy(spec):
            continue
        changed = base.with_changes(**{name: getattr(example_policy(spec), name)})
        if changed == base:
            continue
        assert changed.describe() != base.describe()
        assert (changed.identity() != base.identity()) is spec.identity


def test_every_ini_key_and_option_comes_from_a_table() -> None:
    parser = declared()
    from_fields = {spec.ini_key: spec.ini for spec in FIELDS if spec.ini_key is not None}
    from_table = {key.name: key.type for key in INI_KEYS}
    from_hosts = {"reuse_hosts": "linelist", "reuse_host_timeout": "string"}
    assert {name: kind for name, (kind, _) in parser.ini.items()} == {
        **from_fields,
        **from_table,
        **from_hosts,
    }
    for spec in FIELDS:
        if spec.flag is not None:
            assert parser.flags[spec.flag] == spec.dest
            assert parser.options[str(spec.dest)] is None, "None means not given"
    policy_flags = {
        f for f in parser.flags if f.removeprefix("--reuse-").replace("-", "_") in BY_NAME
    }
    assert policy_flags == {spec.flag for spec in FIELDS if spec.flag is not None}


def test_ini_help_states_each_fields_default() -> None:
    helps = declared().help
    assert helps["reuse_replicas"].endswith("MAX >= 1 (default: 2)")
    assert helps["reuse_idle_ttl"].endswith("(default: 30)")
    assert helps["reuse_scope"].endswith("(default: global)")
    assert helps["reuse_prewarm"].endswith("(default: none)")
    assert helps["reuse_timeout"].endswith("(default: none)")


def test_payload_is_builtins_only() -> None:
    policy = ReusePolicy(
        replicas=(1, 3), idle_ttl=timedelta(minutes=5), prewarm=("db",), timeout=2.5
    )
    payload: dict[str, Any] = dict(policy.payload())
    assert payload == {
        "replicas": (1, 3),
        "idle_ttl": 300.0,
        "concurrency": 1,
        "scaledown_ttl": 30.0,
        "prewarm": ["db"],
        "timeout": 2.5,
        "max_tests_per_replica": None,
        "max_memory_per_replica": None,
    }


def test_a_marker_shared_by_many_tests_is_read_once() -> None:
    shared = pytest.mark.reuse(replicas=3).mark
    other = pytest.mark.reuse(replicas=1).mark
    items = [FakeItem(shared), FakeItem(shared), FakeItem(other), FakeItem(shared)]
    for n, item in enumerate(items):
        item.nodeid = f"test_x.py::test_{n}"
    policies = resolve_policies(cast("list[pytest.Item]", items), settings_of())
    assert [p.max_replicas for p in policies.values()] == [3, 3, 1, 3]
    assert policies["test_x.py::test_0"] is policies["test_x.py::test_3"], "read once"
    bad = pytest.mark.reuse(replicas=0).mark
    with pytest.raises(pytest.UsageError, match=r"at test_x.py::test_1: "):
        resolve_policies(
            cast("list[pytest.Item]", [FakeItem(other), _named(FakeItem(bad), "test_1")]),
            settings_of(),
        )


def _named(item: FakeItem, name: str) -> FakeItem:
    item.nodeid = f"test_x.py::{name}"
    return item


def test_readme_documents_every_field_its_ini_key_and_option() -> None:
    """A field added to the table is documented too: README's field table, its ini key in the
    ini table, its option."""
    readme = (Path(__file__).resolve().parents[2] / "README.rst").read_text()
    for spec in FIELDS:
        assert re.search(rf"^{spec.name} ", readme, re.M), spec.name
        if spec.ini_key is not None:
            assert re.search(rf"^{spec.ini_key} ", readme, re.M), spec.ini_key
        if spec.flag is not None:
            assert spec.flag in readme, spec.flag
