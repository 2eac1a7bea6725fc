"""Ini keys, options and reuse markers: resolution, and the UsageErrors for every bad input.

Nothing here starts a replica: unit tests resolve settings and markers directly, and the end to
end runs either stop with a usage error before any replica starts or run with ``--reuse=off``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import pytest

from pytest_reuse_env.markers import resolve_item_policy, resolve_policies
from pytest_reuse_env.options import MARKER_HELP
from pytest_reuse_env.policy import SHORT_TTL_ENV, ReusePolicy
from pytest_reuse_env.settings import ReuseSettings
from tests.helpers import COMPAT_OFF, run_in_process

# pytest-asyncio, when installed, warns at configure time about an unset ini key of its own;
# under filterwarnings=error that would fail every inner run for a reason unrelated to ours.
# The compatibility matrix's plugins are off too (syrupy fails an in-process run's usage error).
PLUGIN_ARGS = ("-p", "no:asyncio", *COMPAT_OFF, "-p", "reuse_env")


@pytest.fixture(autouse=True)
def _long_ttl_minimums(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell may export the test-only variable; these tests need the real rules.
    monkeypatch.delenv(SHORT_TTL_ENV, raising=False)


def settings_for(pytester: pytest.Pytester, ini: str = "", *args: str) -> ReuseSettings:
    pytester.makeini(f"[pytest]\n{ini}")
    config = pytester.parseconfig(*PLUGIN_ARGS, *args)
    return ReuseSettings.from_config(config)


def usage_error(pytester: pytest.Pytester, ini: str = "", *args: str) -> str:
    with pytest.raises(pytest.UsageError) as excinfo:
        settings_for(pytester, ini, *args)
    return str(excinfo.value)


ML = ReusePolicy(replicas=(1, 3), idle_ttl=300)
SETTINGS = ReuseSettings(
    enabled=True,
    default_policy=ReusePolicy(scope="run"),
    named={"ml": ML},
    apply_all=None,
)


def items_of(pytester: pytest.Pytester, source: str) -> dict[str, pytest.Item]:
    # The marker is declared in ini so these tests do not depend on the plugin module.
    pytester.makeini("[pytest]\nmarkers =\n    reuse: test marker\n")
    module = pytester.getmodulecol(source, configargs=("-p", "no:asyncio", *COMPAT_OFF))
    return {item.name: item for item in pytester.genitems([module])}


class TestReuseSettings:
    def test_defaults(self, pytester: pytest.Pytester) -> None:
        settings = settings_for(pytester)
        assert settings == ReuseSettings(
            enabled=True, default_policy=ReusePolicy(), named={}, apply_all=None
        )

    def test_ini_keys_build_the_default_policy(self, pytester: pytest.Pytester) -> None:
        settings = settings_for(
            pytester,
            "reuse_replicas = (1, 3)\n"
            "reuse_idle_ttl = 5m\n"
            "reuse_concurrency = 2\n"
            "reuse_scaledown_ttl = 90\n"
            "reuse_scope = run\n"
            "reuse_prewarm = db model\n"
            "reuse_timeout = 2.5\n",
        )
        assert settings.default_policy == ReusePolicy(
            replicas=(1, 3),
            idle_ttl=300,
            concurrency=2,
            scaledown_ttl=90,
            scope="run",
            prewarm=("db", "model"),
            timeout=2.5,
        )

    def test_options_override_ini(self, pytester: pytest.Pytester) -> None:
        settings = settings_for(
            pytester,
            "reuse_replicas = 5\nreuse_concurrency = not-an-int\nreuse_idle_ttl = 60\n",
            "--reuse-replicas=(0, 2)",
            "--reuse-concurrency=3",
            "--reuse-scope=run",
            "--reuse-scaledown-ttl=1m",
        )
        assert settings.default_policy == ReusePolicy(
            replicas=(0, 2), concurrency=3, scope="run", scaledown_ttl=60, idle_ttl=60
        )

    def test_override_ini_is_read(self, pytester: pytest.Pytester) -> None:
        settings = settings_for(pytester, "reuse_idle_ttl = 10\n", "-o", "reuse_idle_ttl=45")
        assert settings.default_policy.idle_ttl_seconds == 45

    def test_named_policies_inherit_the_default_policy(self, pytester: pytest.Pytester) -> None:
        settings = settings_for(
            pytester,
            "reuse_scope = run\n"
            "reuse_policies =\n"
            "    ml: replicas=(1, 3) idle_ttl=300\n"
            "    # comment lines are skipped\n"
            "    plain:\n"
            "    global_one: scope=global concurrency=4\n",
        )
        assert settings.named == {
            "ml": ReusePolicy(replicas=(1, 3), idle_ttl=300, scope="run"),
            "plain": ReusePolicy(scope="run"),
            "global_one": ReusePolicy(scope="global", concurrency=4),
        }
        assert settings.known_names() == ["default", "ml", "plain", "global_one", "off"]

    def test_named_is_a_read_only_copy(self) -> None:
        source = {"ml": ML}
        settings = ReuseSettings(enabled=True, default_policy=ReusePolicy(), named=source)
        source["other"] = ReusePolicy()
        assert list(settings.named) == ["ml"]
        with pytest.raises(TypeError):
            settings.named["x"] = ML  # type: ignore[index]
        assert hash(settings) == hash(
            ReuseSettings(enabled=True, default_policy=ReusePolicy(), named={"ml": ML})
        )

    @pytest.mark.parametrize(
        ("ini", "args", "expected"),
        [
            ("", (), None),
            ("reuse_all = default\n", (), ReusePolicy(concurrency=2)),
            ("reuse_all = ml\n", (), ReusePolicy(replicas=1, concurrency=2)),
            ("reuse_all = off\n", (), None),
            ("reuse_all = ml\n", ("--reuse-all=off",), None),
            ("reuse_all = nope\n", ("--reuse-all=default",), ReusePolicy(concurrency=2)),
            ("", ("--reuse-all=ml",), ReusePolicy(replicas=1, concurrency=2)),
        ],
    )
    def test_apply_all(
        self,
        pytester: pytest.Pytester,
        ini: str,
        args: tuple[str, ...],
        expected: ReusePolicy | None,
    ) -> None:
        ini += "reuse_concurrency = 2\nreuse_policies = ml: replicas=1\n"
        assert settings_for(pytester, ini, *args).apply_all == expected

    def test_reuse_off_reads_nothing_else(self, pytester: pytest.Pytester) -> None:
        settings = settings_for(
            pytester,
            "reuse_idle_ttl = 10\nreuse_policies = broken\nreuse_all = nope\n",
            "--reuse=off",
            "--reuse-replicas=-3",
        )
        assert not settings.enabled
        assert settings.apply_all is None

    @pytest.mark.parametrize(
        ("ini", "args", "message"),
        [
            (
                "reuse_idle_ttl = 10\n",
                (),
                "reuse_idle_ttl: idle_ttl must be at least 30 seconds, got 10"
                " (ini key reuse_idle_ttl in tox.ini)",
            ),
            (
                "",
                ("-o", "reuse_idle_ttl=10"),
                "reuse_idle_ttl: idle_ttl must be at least 30 seconds, got 10"
                " (ini key reuse_idle_ttl from -o/--override-ini)",
            ),
            (
                "reuse_idle_ttl = 60\n",
                ("--reuse-idle-ttl=10",),
                "--reuse-idle-ttl: idle_ttl must be at least 30 seconds, got 10"
                " (command-line option --reuse-idle-ttl)",
            ),
            (
                "reuse_policies =\n    ml: replicas=1\n    ml2: replicas=(3, 1)\n",
                (),
                "reuse_policies line 2 'ml2: replicas=(3, 1)': replicas min must be <= max,"
                " got (3, 1) (ini key reuse_policies in tox.ini)",
            ),
            (
                "reuse_all = nope\nreuse_policies = ml: replicas=1\n",
                (),
                "reuse_all: unknown policy name 'nope'; known names: default, ml, off"
                " (ini key reuse_all in tox.ini)",
            ),
            (
                "",
                ("--reuse-all=nope",),
                "--reuse-all: unknown policy name 'nope'; known names: default, off"
                " (command-line option --reuse-all)",
            ),
        ],
    )
    def test_errors_name_source_value_and_rule(
        self, pytester: pytest.Pytester, ini: str, args: tuple[str, ...], message: str
    ) -> None:
        assert usage_error(pytester, ini, *args) == message


class TestResolveItemPolicy:
    SOURCE = """
        import pytest
        from datetime import timedelta
        from pytest_reuse_env import ReusePolicy

        def test_unmarked(): pass

        @pytest.mark.reuse
        def test_bare(): pass

        @pytest.mark.reuse()
        def test_called(): pass

        @pytest.mark.reuse("default")
        def test_default(): pass

        @pytest.mark.reuse("ml")
        def test_named(): pass

        @pytest.mark.reuse(ReusePolicy(replicas=4))
        def test_object(): pass

        @pytest.mark.reuse(replicas=1, idle_ttl=60)
        def test_changes(): pass

        @pytest.mark.reuse("ml", concurrency=4)
        def test_named_changes(): pass

        @pytest.mark.reuse(ReusePolicy(replicas=4), idle_ttl=timedelta(minutes=2))
        def test_object_changes(): pass

        @pytest.mark.reuse("off")
        def test_off(): pass

        @pytest.mark.reuse(False)
        def test_false(): pass

        @pytest.mark.reuse("ml")
        class TestClass:
            def test_in_class(self): pass

            @pytest.mark.reuse(replicas=(0, 1))
            def test_own_marker_wins(self): pass

            @pytest.mark.reuse(False)
            def test_off_in_class(self): pass
    """

    EXPECTED: ClassVar[dict[str, ReusePolicy | None]] = {
        "test_bare": SETTINGS.default_policy,
        "test_called": SETTINGS.default_policy,
        "test_default": SETTINGS.default_policy,
        "test_named": ML,
        "test_object": ReusePolicy(replicas=4),
        "test_changes": ReusePolicy(scope="run", replicas=1, idle_ttl=60),
        "test_named_changes": ML.with_changes(concurrency=4),
        "test_object_changes": ReusePolicy(replicas=4, idle_ttl=120),
        "test_off": None,
        "test_false": None,
        "test_in_class": ML,
        "test_own_marker_wins": ReusePolicy(scope="run", replicas=(0, 1)),
        "test_off_in_class": None,
    }

    @pytest.mark.parametrize("apply_all", [None, ReusePolicy(concurrency=7)])
    def test_forms(self, pytester: pytest.Pytester, apply_all: ReusePolicy | None) -> None:
        items = items_of(pytester, self.SOURCE)
        settings = ReuseSettings(
            enabled=True,
            default_policy=SETTINGS.default_policy,
            named=SETTINGS.named,
            apply_all=apply_all,
        )
        resolved = {name: resolve_item_policy(item, settings) for name, item in items.items()}
        assert resolved == {"test_unmarked": apply_all, **self.EXPECTED}

    def test_resolve_policies_maps_nodeids_of_replica_items(
        self, pytester: pytest.Pytester
    ) -> None:
        items = items_of(pytester, self.SOURCE)
        policies = resolve_policies(list(items.values()), SETTINGS)
        expected = {
            items[name].nodeid: policy
            for name, policy in self.EXPECTED.items()
            if policy is not None
        }
        assert policies == expected

    def test_disabled_settings_resolve_nothing(self, pytester: pytest.Pytester) -> None:
        items = items_of(pytester, self.SOURCE)
        settings = ReuseSettings(enabled=False, default_policy=ReusePolicy(), apply_all=ML)
        assert resolve_policies(list(items.values()), settings) == {}
        assert resolve_item_policy(items["test_named"], settings) is None

    def test_module_pytestmark(self, pytester: pytest.Pytester) -> None:
        items = items_of(
            pytester,
            """
            import pytest
            pytestmark = pytest.mark.reuse("ml")

            def test_module_level(): pass
            """,
        )
        assert resolve_item_policy(items["test_module_level"], SETTINGS) == ML

    @pytest.mark.parametrize(
        ("marker", "message"),
        [
            (
                'reuse("nope")',
                "unknown policy name 'nope'; known names: default, ml, off"
                " (define names in the reuse_policies ini key)",
            ),
            ('reuse("ml", "default")', "takes at most one positional argument"),
            ("reuse(3)", "must be a policy name, a ReusePolicy or False, got 3 (int)"),
            ("reuse(True)", "must be a policy name, a ReusePolicy or False, got True (bool)"),
            ("reuse(None)", "must be a policy name, a ReusePolicy or False, got None"),
            ("reuse(idle_ttl=10)", "idle_ttl must be at least 30 seconds, got 10"),
            ('reuse(concurrency="3")', "concurrency must be an int, got '3' (str)"),
            ("reuse(replicas=(3, 1))", "replicas min must be <= max, got (3, 1)"),
            ("reuse(ttl=60)", "unknown policy field 'ttl': known fields are replicas,"),
            (
                'reuse("off", replicas=2)',
                "'off' runs the test in the pytest process and takes no policy fields,"
                " got replicas",
            ),
            ("reuse(False, scope='run')", "False runs the test in the pytest process"),
        ],
    )
    def test_bad_markers(self, pytester: pytest.Pytester, marker: str, message: str) -> None:
        items = items_of(
            pytester,
            f"""
            import pytest

            @pytest.mark.{marker}
            def test_it(): pass
            """,
        )
        with pytest.raises(pytest.UsageError) as excinfo:
            resolve_item_policy(items["test_it"], SETTINGS)
        text = str(excinfo.value)
        assert text.startswith(f"@pytest.mark.reuse at {items['test_it'].nodeid}: ")
        assert message in text

    def test_marker_help_names_the_marker(self) -> None:
        assert MARKER_HELP.startswith("reuse(")


# End to end: the plugin calls from_config at configure time and resolve_policies after
# collection, so each bad input below stops the run with a usage error before anything starts.


@pytest.mark.parametrize(
    ("ini", "pattern"),
    [
        ("reuse_replicas = (3, 1)", "*replicas min must be <= max, got (3, 1)*"),
        ("reuse_replicas = 0", "*replicas must be at least 1, got 0*"),
        ("reuse_replicas = two", "*replicas must be an int or (min, max)*got 'two'*"),
        ("reuse_idle_ttl = 10", "*idle_ttl must be at least 30 seconds, got 10*"),
        ("reuse_idle_ttl = 1.5", "*idle_ttl must be a duration like 300, 300s*got '1.5'*"),
        ("reuse_concurrency = 0", "*concurrency must be at least 1, got 0*"),
        ("reuse_concurrency = 1.5", "*concurrency must be an int, got '1.5'*"),
        ("reuse_scaledown_ttl = 29s", "*scaledown_ttl must be at least 30 seconds, got 29*"),
        ("reuse_scope = session", "*scope must be 'global' or 'run', got 'session'*"),
        ("reuse_prewarm = db not-a-name", "*prewarm must hold fixture names*'not-a-name'*"),
        ("reuse_timeout = 0", "*timeout must be a finite number of seconds > 0, got 0*"),
        ("reuse_timeout = soon", "*timeout must be a number of seconds*got 'soon'*"),
        ("reuse_all = nope", "*unknown policy name 'nope'; known names: default, off*"),
    ],
)
def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester, ini: str, pattern: str) -> None:
    key = ini.split(" =", 1)[0]
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_ok(): pass")
    result = run_in_process(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {key}: {pattern}(ini key {key} in tox.ini)"])


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("ml replicas=1", "*expected 'NAME: key=value ...'*"),
        ("m-l: replicas=1", "*policy name must be a Python identifier, got 'm-l'*"),
        ("default: replicas=1", "*'default' is reserved and cannot name a policy*"),
        ("off: replicas=1", "*'off' is reserved and cannot name a policy*"),
        ("ml: replicas=(3, 1)", "*replicas min must be <= max, got (3, 1)*"),
        ("ml: ttl=30", "*unknown key 'ttl' in 'ttl=30'*"),
        ("ml: replicas=1 replicas=2", "*duplicate key 'replicas'*"),
        ("ml: idle_ttl=10", "*idle_ttl must be at least 30 seconds, got 10*"),
        ("ml: oops", "*malformed token 'oops': expected key=value*"),
    ],
)
def test_bad_policy_line_is_a_usage_error(
    pytester: pytest.Pytester, line: str, pattern: str
) -> None:
    pytester.makeini(f"[pytest]\nreuse_policies =\n    fast: replicas=1\n    {line}\n")
    pytester.makepyfile("def test_ok(): pass")
    result = run_in_process(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: reuse_policies line 2 '{line}': {pattern}"])


def test_duplicate_policy_name_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nreuse_policies =\n    ml: replicas=1\n    ml: replicas=2\n")
    pytester.makepyfile("def test_ok(): pass")
    result = run_in_process(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: reuse_policies line 2 'ml: replicas=2': policy 'ml' is already defined on line 1*"]
    )


@pytest.mark.parametrize(
    ("option", "pattern"),
    [
        ("--reuse-replicas=(3, 1)", "*replicas min must be <= max, got (3, 1)*"),
        ("--reuse-idle-ttl=10", "*idle_ttl must be at least 30 seconds, got 10*"),
        ("--reuse-concurrency=x", "*concurrency must be an int, got 'x'*"),
        ("--reuse-scaledown-ttl=0", "*scaledown_ttl must be at least 30 seconds, got 0*"),
        ("--reuse-scope=session", "*scope must be 'global' or 'run', got 'session'*"),
        ("--reuse-all=nope", "*unknown policy name 'nope'*"),
    ],
)
def test_bad_option_is_a_usage_error(pytester: pytest.Pytester, option: str, pattern: str) -> None:
    flag = option.split("=", 1)[0]
    pytester.makepyfile("def test_ok(): pass")
    result = run_in_process(pytester, option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {flag}: {pattern}(command-line option {flag})"])


def test_bad_reuse_choice_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(): pass")
    result = run_in_process(pytester, "--reuse=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--reuse*invalid choice*'maybe'*"])


@pytest.mark.parametrize(
    ("marker", "pattern"),
    [
        ('reuse("nope")', "*unknown policy name 'nope'; known names: default, ml, off*"),
        ("reuse(idle_ttl=10)", "*idle_ttl must be at least 30 seconds, got 10"),
        ("reuse(ttl=60)", "*unknown policy field 'ttl'*"),
        ('reuse("ml", "other")', "*takes at most one positional argument*"),
        ("reuse(2)", "*must be a policy name, a ReusePolicy or False, got 2 (int)"),
        ('reuse("ml", concurrency=True)', "*concurrency must be an int, got True (bool)"),
    ],
)
def test_bad_marker_is_a_usage_error(pytester: pytest.Pytester, marker: str, pattern: str) -> None:
    pytester.makeini("[pytest]\nreuse_policies = ml: replicas=1\n")
    pytester.makepyfile(
        test_x=f"""
        import pytest

        def test_fine(): pass

        @pytest.mark.{marker}
        def test_y(): pass
        """
    )
    result = run_in_process(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: @pytest.mark.reuse at test_x.py::test_y: {pattern}"])
    result.stdout.no_fnmatch_line("*passed*")


def test_bad_class_marker_names_each_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        import pytest

        @pytest.mark.reuse(replicas=(3, 1))
        class TestGroup:
            def test_a(self): pass
        """
    )
    result = run_in_process(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: @pytest.mark.reuse at test_x.py::TestGroup::test_a: replicas min must be <= max*"]
    )


def test_bad_module_pytestmark(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        import pytest

        pytestmark = pytest.mark.reuse("missing")

        def test_a(): pass
        """
    )
    result = run_in_process(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: @pytest.mark.reuse at test_x.py::test_a: unknown policy name 'missing'*"]
    )


def test_bad_marker_added_by_conftest(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        def pytest_collection_modifyitems(items):
            for item in items:
                if "slow" in item.name:
                    item.add_marker(pytest.mark.reuse(concurrency=0))
        """
    )
    pytester.makepyfile(test_x="def test_fast(): pass\ndef test_slow(): pass\n")
    result = run_in_process(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: @pytest.mark.reuse at test_x.py::test_slow: concurrency must be at least 1, got 0"]
    )


def test_reuse_off_is_plain_pytest(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\n"
        "reuse_idle_ttl = 10\n"
        "reuse_policies = not a policy line\n"
        "reuse_all = nope\n"
        "reuse_replicas = (3, 1)\n"
    )
    pytester.makepyfile(
        test_x="""
        import pytest

        pytestmark = pytest.mark.reuse("missing")

        @pytest.mark.reuse(idle_ttl=1, replicas="many")
        def test_a(): pass

        @pytest.mark.reuse
        class TestB:
            def test_b(self): pass
        """
    )
    # --strict-markers: the marker stays declared when reuse is off, so marked suites still run.
    result = run_in_process(pytester, "--reuse=off", "--reuse-idle-ttl=1", "--strict-markers")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK


def test_marker_is_declared(pytester: pytest.Pytester) -> None:
    result = run_in_process(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.reuse(policy='default', **fields):*"])


def test_short_ttl_env_applies_to_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHORT_TTL_ENV, "1")
    settings = settings_for(pytester, "reuse_idle_ttl = 200ms\n")
    assert settings.default_policy.idle_ttl == timedelta(milliseconds=200)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("reuse_max_restarts", "-1", "*reuse_max_restarts must be an int >= 0, got '-1'*"),
        ("reuse_max_restarts", "two", "*reuse_max_restarts must be an int >= 0, got 'two'*"),
        ("reuse_start_timeout", "0", "*reuse_start_timeout must be a number of seconds > 0*"),
        ("reuse_start_timeout", "soon", "*reuse_start_timeout must be a number of seconds*"),
        ("reuse_leaks", "loud", "*reuse_leaks must be one of off, warn, recycle, fail*"),
        ("reuse_leak_memory_mib", "-3", "*reuse_leak_memory_mib must be a number > 0*"),
        ("reuse_teardown_timeout", "x", "*reuse_teardown_timeout must be a number > 0*"),
        ("reuse_max_tests_per_replica", "0", "*max_tests_per_replica must be at least 1*"),
        ("reuse_max_memory_per_replica", "lots", "*max_memory_per_replica*an int or none*"),
        # int("²") raises though "²".isdigit(): once an INTERNALERROR.
        ("reuse_max_restarts", "²", "*reuse_max_restarts must be an int >= 0, got '²'*"),
        ("reuse_leaks_ignore", "bogus:thing", "*reuse_leaks_ignore must be env:*'bogus:thing'*"),
        ("reuse_env_vars", "PATH A=B", "*reuse_env_vars must be variable names*got 'A=B'*"),
        ("reuse_teardown_timeout", "1e300", "*must be a number > 0 and at most 31536000*"),
        ("reuse_idle_ttl", "99999999999999999999", "*idle_ttl must be at most 999999999 days*"),
    ],
)
def test_runtime_limits_are_validated(
    pytester: pytest.Pytester, key: str, value: str, expected: str
) -> None:
    pytester.makeini(f"[pytest]\n{key} = {value}\n")
    pytester.makepyfile("def test_x(): pass")
    result = run_in_process(pytester, plugins=("-p", "reuse_env", "-p", "no:asyncio", *COMPAT_OFF))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
