"""The wire protocol between the controller and a replica, in one place.

Every message is a ``(name, payload)`` tuple of builtins that execnet can serialize (str, int,
float, bool, None, list, tuple, dict). This module imports nothing from the package, so both
sides can use it.

Controller to replica, in the order a replica sees them::

    START    StartPayload        once, first: how to build the replica's pytest session
    ATTACH   AttachPayload       instead of START, to a persistent replica already serving
    NEXT     str                 one test at a time: the session's test after the next RUN's
                                 (run here or not), so its teardown leaves what that one shares
    RUN      str                 nodeids appended to the replica's queue (``joined_nodeids``)
    DRAIN    None                run what you hold without waiting for a next item
    CANCEL   None                drop queued items that have not started (``-x``, ``--maxfail``)
    STEAL    int                 hand back up to that many queued items that have not started,
                                 from the end (another replica ran dry): RETURNED lists them
    END_LEASE None               this run is done with you: send WORKEROUTPUT for it now
    SHUTDOWN None                run what you hold, tear the session down, exit

Replica to controller::

    READY          ReadyPayload   collected and serving (again, after each ATTACH)
    START_FAILED   FailurePayload the session could not be built (traceback included)
    STARTED        {"nodeid"}     an async test began in a concurrent batch (its LOGSTART,
                                  reports and LOGFINISH come together when it finishes)
    TEST           TestPayload    a whole test, once it ended: its reports and warnings in
                                  order (the common case: one message a test; JSON text)
    TESTS          str            several TESTs of tests that passed quietly, held back
                                  and sent together (``replica/held.py``): a line each, as in
                                  the held file (``held_line``: when its test ended, on this
                                  machine's ``time.monotonic``, and its payload); one string,
                                  which execnet copies where it would walk a list item by
                                  item; the controller handles each as its own TEST, in order
    LOGSTART       LogPayload     a test still running after ANNOUNCE_SECONDS: from then on
                                  its REPORT, WARNING and LOGFINISH messages stream one by one
    REPORT         str: JSON of the serialized TestReport (pytest_report_to_serializable,
                                  plus the REPORT_* keys; see encode_report), or a
                                  ``CompactReport`` list
    LOGFINISH      {"nodeid", "location"}
    WARNING        WarningPayload a warning recorded while a test ran
    UNKNOWN_NODEID {"nodeid"}     a nodeid the replica did not collect
    TEARDOWN_ERROR FailurePayload a module/class/session finalizer failed between tests
    RECYCLE        RecyclePayload replace me: a leak (reuse_leaks=recycle) or a recycling limit;
                                  it hands back the tests it held (``returned``)
    RETURNED       list[str]      tests handed back unrun: those sent after RECYCLE, or those
                                  STEAL asked for (possibly none)
    STOPPED_EARLY  StoppedEarlyPayload the session is ending unasked (KeyboardInterrupt,
                                  pytest.exit, an error inside pytest) while running tests
    WORKEROUTPUT   dict           ``config.workeroutput`` of the lease that ended (after
                                  END_LEASE, or after the session's teardown), for xdist's
                                  ``pytest_testnodedown`` in the controller
    FINISHED       FinishedPayload session torn down, about to exit

Leases: START and ATTACH carry the controller's lease id; every message about a test carries
the lease it was started under (``"lease"`` in a dict payload, ``REPORT_LEASE`` in a report),
so the controller drops what a replica says for an earlier client (a test that outlived its
run). A report's captured sections and failure text are cut to ``MAX_SECTION_CHARS`` each.

A link delivers ``END`` (``(CHANNEL_CLOSED, None)``) after its last message, whatever ended it;
it is never sent on the wire. Every message is made by one builder below (``protocol.run``,
``protocol.ready``, ...), so both sides agree on each payload's shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO, Any, Final, NotRequired, TypedDict

# controller -> replica
START: Final = "start"
ATTACH: Final = "attach"
RUN: Final = "run"
NEXT: Final = "next"
DRAIN: Final = "drain"
CANCEL: Final = "cancel"
STEAL: Final = "steal"
END_LEASE: Final = "end_lease"
SHUTDOWN: Final = "shutdown"
#: The test files a replica started with ``collect_later`` collects (see StartPayload).
COLLECT: Final = "collect"

# replica -> controller
READY: Final = "ready"
START_FAILED: Final = "start_failed"
STARTED: Final = "started"
TEST: Final = "test"
TESTS: Final = "tests"
LOGSTART: Final = "logstart"
REPORT: Final = "report"
LOGFINISH: Final = "logfinish"
WARNING: Final = "warning"
UNKNOWN_NODEID: Final = "unknown_nodeid"
TEARDOWN_ERROR: Final = "teardown_error"
RECYCLE: Final = "recycle"
RETURNED: Final = "returned"
STOPPED_EARLY: Final = "stopped_early"
WORKEROUTPUT: Final = "workeroutput"
FINISHED: Final = "finished"

#: Keys the replica adds to each serialized report; they become attributes of the report.
REPORT_REPLICA: Final = "reuse_replica"
#: Where an xdist worker leaves its environments' figures for xdist's controller
#: (``config.workeroutput``).
WORKEROUTPUT_KEY: Final = "reuse_environments"
#: Set by an xdist worker whose replicas' fixture teardown failed between tests: it exits 1,
#: which xdist's controller does not count, so the controller's run exits 1 too.
WORKEROUTPUT_TEARDOWN_FAILED: Final = "reuse_teardown_failed"
REPORT_WARM: Final = "reuse_warm"
#: The lease (START or ATTACH) the report's test was started under.
REPORT_LEASE: Final = "reuse_lease"
#: Longest captured-output section or failure text a report carries (characters); the rest is
#: cut with a note, so a test printing 100 MB is reported, not lost with its connection.
MAX_SECTION_CHARS: Final = 10 * 1024 * 1024
#: Added by the controller when it replays a report: the environment's name.
REPORT_ENVIRONMENT: Final = "reuse_environment"
#: Per-run data of other plugins a replica adds to a serialized report (``replica/perrun.py``):
#: junitxml's recorded attributes and suite properties, ``--setup-show``'s terminal lines.
REPORT_XML_ATTRIBUTES: Final = "reuse_xml_attributes"
REPORT_XML_PROPERTIES: Final = "reuse_xml_properties"
REPORT_TERMINAL: Final = "reuse_terminal"
#: Where a lease's per-run data of other plugins travels in its WORKEROUTPUT message
#: (plugin name -> its data; ``controller/perrun.py`` merges it), and syrupy's key in it.
PERRUN_KEY: Final = "reuse_perrun"
PERRUN_SYRUPY: Final = "syrupy"

#: A test running longer than this is announced (LOGSTART) and its messages stream; a quicker
#: one is a single TEST message. The controller back-dates the start by LogPayload's elapsed.
ANNOUNCE_SECONDS: Final = 0.5

#: The common report, compact: a passed phase with no output, no longrepr, no user
#: properties and no attribute beyond TestReport's own; the controller rebuilds the same
#: ``TestReport`` from its own item. In a TEST: ``[PASSED, when, duration, start, stop]``;
#: as a REPORT payload: ``[PASSED, when, duration, start, stop, nodeid, warm, lease]``.
PASSED: Final = "passed"
#: A full report in a TEST's events: ``[FULL_REPORT, json text]``; a warning is
#: ``[WARNING, WarningPayload]``.
FULL_REPORT: Final = "report"

#: Environment variable set inside every replica to its id, so tests and conftests can tell.
REPLICA_ENV_VAR: Final = "PYTEST_REUSE_REPLICA"

Message = tuple[str, Any]

#: The name of the message a link delivers after its last one (execnet's end marker).
CHANNEL_CLOSED: Final = "channel_closed"
#: That message itself; both sides handle it by its name, from their dispatch tables.
END: Final[Message] = (CHANNEL_CLOSED, None)

#: What a controller may say (START first, or ATTACH); anything else is a protocol error the
#: replica ends its session on.
CONTROLLER_MESSAGES: Final = frozenset(
    {START, ATTACH, RUN, NEXT, DRAIN, CANCEL, STEAL, END_LEASE, SHUTDOWN, COLLECT}
)

#: What a replica may say; anything else is a protocol error the controller reports.
REPLICA_MESSAGES: Final = frozenset(
    {
        READY,
        START_FAILED,
        STARTED,
        TEST,
        TESTS,
        LOGSTART,
        REPORT,
        LOGFINISH,
        WARNING,
        UNKNOWN_NODEID,
        TEARDOWN_ERROR,
        RECYCLE,
        RETURNED,
        STOPPED_EARLY,
        WORKEROUTPUT,
        FINISHED,
    }
)


#: ``reuse_leaks`` values: what a replica does about a leak.
LEAK_MODES: Final = ("off", "warn", "recycle", "fail")
#: ``reuse_leaks_ignore`` kinds, and whether each takes a name pattern (``env:CACHE_*``).
LEAK_KINDS: Final = {
    "env": True,
    "thread": True,
    "cwd": False,
    "sys.path": False,
    "fds": False,
    "children": False,
    "tasks": False,
    "memory": False,
}


class HygienePayload(TypedDict):
    leaks: str  # one of LEAK_MODES
    ignore: list[str]
    memory_mib: float


class PolicyPayload(TypedDict):
    """The policy fields a replica needs (``ReusePolicy.payload()``; the fields whose
    ``policy.FIELDS`` entry has a ``wire``), as builtins: TTLs in seconds."""

    replicas: tuple[int, int]
    idle_ttl: float
    concurrency: int
    scaledown_ttl: float
    prewarm: list[str]
    timeout: float | None
    max_tests_per_replica: int | None
    max_memory_per_replica: int | None


class RecyclePayload(TypedDict):
    kind: str  # "leak", "max tests", "max memory"
    detail: str
    nodeid: str
    returned: list[str]


class HostPayload(TypedDict):
    """What a replica on another host (``reuse_hosts``) needs to find and check the project."""

    name: str
    spec: str
    controller_root: str
    #: The project is at the host's chdir, not at ``controller_root``: rewrite paths.
    relocated: bool
    #: A popen host: the controller's temporary and log paths are valid there.
    same_machine: bool
    #: ``{path relative to the rootdir: sha256}`` the host's copy must match.
    files: dict[str, str]
    environ: dict[str, str]


class MainPayload(TypedDict):
    """The controller's ``__main__`` and ``sys.argv``, for a replica to look the same."""

    #: ``__main__.__spec__.name`` ("pytest.__main__" under ``python -m pytest``), or None.
    spec: str | None
    file: str | None
    argv: list[str]


class StartPayload(TypedDict):
    replica_id: str
    args: list[str]
    invocation_dir: str
    sys_path: list[str]
    #: None: the replica makes its own where plain pytest would (a detached replica).
    basetemp: str | None
    main: MainPayload
    log_path: str
    #: The policy fields a replica needs: a detached replica retires by its scaling rules.
    policy: PolicyPayload
    hygiene: HygienePayload
    teardown_timeout: float
    option_overrides: dict[str, Any]
    #: ``config.workerinput`` as xdist's node hooks filled it (worker id, run uid, plugins').
    workerinput: NotRequired[dict[str, Any]]
    host: NotRequired[HostPayload]
    #: This lease's id: stamped on every message about a test started under it.
    lease: NotRequired[str]
    #: Watch mode: a run-scoped replica keeps a reloader too, and catches up with edits when
    #: its controller sends ATTACH again between rounds (a detached one always does).
    reload: NotRequired[bool]
    #: What to collect instead of the run's arguments (a run-scoped replica: only the files
    #: that hold its environment's tests). Absent: collect what the arguments name.
    collect: NotRequired[CollectPayload]
    #: Started while the controller still collects: the files come in COLLECT, later.
    collect_later: NotRequired[bool]
    #: A replica on this machine: where it writes the TESTs it holds back (``held_path``,
    #: ``replica/held.py``), for the controller to read should it die. Absent: none held.
    held: NotRequired[str]


class CollectPayload(TypedDict):
    """The test files a replica collects, and every conftest.py the controller loaded (in its
    order): a conftest beside other files still runs its session-wide hooks (a
    ``pytest_collection_modifyitems`` that marks any item) in plain pytest."""

    files: list[str]
    conftests: list[str]
    #: What the controller collected for those files' routed tests (``collection_check.py``):
    #: nodeid -> digest of its markers, as JSON text (json's C codec takes a few ms for 20,000
    #: tests where execnet's serializer takes ten times that), and project module -> its file.
    expect: NotRequired[str]
    modules: NotRequired[dict[str, str]]
    #: Collect the run's arguments after all (a replica that waited for its list).
    whole_run: NotRequired[bool]


class ReadyPayload(TypedDict):
    pid: int
    #: What it collected (``joined_nodeids``).
    nodeids: str
    collect_errors: list[str]
    #: What becoming warm cost this replica: start, collection, pre-warming, and the setup
    #: phase of its first test (0 until it has run one). The same on every attach.
    setup_seconds: float
    prewarm_errors: list[str]
    tests_run: int
    changed_files: list[str]
    lease: NotRequired[str]
    #: Only after an ATTACH, from a replica that checks its files (replica/reload.py).
    reload: NotRequired[ReloadPayload]
    #: How its collection of only some files differs from the controller's
    #: (``collection_check.py``): it must not serve; absent when it does not.
    collection_differs: NotRequired[str]
    #: A warm replica's tests' marker digests (``collection_check.digests``), as JSON text:
    #: the controller compares them with its own collection's (``launcher.stale_reason``).
    digests: NotRequired[str]


class ReloadPayload(TypedDict):
    """What a warm replica did to catch up with edited files before this READY."""

    #: Why it cannot serve this run (the controller starts a fresh replica), or None.
    stale: str | None
    #: Files re-imported or collected again, relative to the invocation directory.
    reimported: list[str]
    #: Warm fixtures kept; fixtures torn down as ``[name, why]`` (set up again on use).
    kept: list[str]
    rebuilt: list[list[str]]
    #: Setup seconds the kept fixtures cost when they were built.
    kept_seconds: float
    #: Seconds the catching up took.
    seconds: float


class AttachPayload(TypedDict):
    controller_pid: int
    lease: NotRequired[str]
    #: This run's ``config.workerinput`` for the lease (a new run uid, seeds, ports).
    workerinput: NotRequired[dict[str, Any]]


class StoppedEarlyPayload(TypedDict):
    #: The tests running when the session's end began (none between tests).
    nodeids: list[str]
    #: "interrupt" (KeyboardInterrupt), "exit" (pytest.exit) or "error" (anything else).
    kind: str
    #: pytest.exit's returncode, if it gave one.
    returncode: int | None
    #: The exception's message (pytest.exit's reason), for the run's closing line.
    message: str
    traceback: str
    lease: str


class FailurePayload(TypedDict):
    pid: int
    traceback: str


class WarningPayload(TypedDict):
    message: str
    category_module: str
    category_name: str
    filename: str
    lineno: int
    nodeid: str
    location: tuple[str, int, str] | None
    lease: NotRequired[str]


class FinishedPayload(TypedDict):
    tests_run: int
    #: The replica's pytest exit code.
    exit_code: NotRequired[int | None]


class NodeidPayload(TypedDict):
    nodeid: str
    lease: NotRequired[str]


class LogPayload(TypedDict):
    nodeid: str
    location: tuple[str, int | None, str]
    lease: NotRequired[str]
    #: LOGSTART only: seconds the test had been running when it was announced.
    elapsed: NotRequired[float]


class TestPayload(TypedDict):
    """TEST: one test from its start to its end, nothing of it sent before."""

    nodeid: str
    lease: str
    #: Whether the replica had run a test before this one (the "[r0 warm]" label).
    warm: bool
    #: In the order they happened: ``[FULL_REPORT, str]``, ``[PASSED, when, duration, start,
    #: stop]`` (see PASSED), ``[WARNING, WarningPayload]``, or ``[LOGSTART]`` when the test
    #: starts again (another attempt, as pytest-rerunfailures makes).
    events: list[list[Any]]
    #: The item's location (``pytest_runtest_logstart``'s), as the replica computed it.
    location: NotRequired[tuple[str, int | None, str]]


# -- builders: controller -> replica ------------------------------------------------------


def start(payload: StartPayload) -> Message:
    return (START, payload)


def attach(
    controller_pid: int, lease: str = "", workerinput: dict[str, Any] | None = None
) -> Message:
    payload: AttachPayload = {"controller_pid": controller_pid, "lease": lease}
    if workerinput is not None:
        payload["workerinput"] = workerinput
    return (ATTACH, payload)


def run(nodeids: Iterable[str]) -> Message:
    return (RUN, joined_nodeids(nodeids))


def next_test(nodeid: str) -> Message:
    """NEXT, sent before the RUN it is about (a replica may start that test as soon as it
    reads the RUN)."""
    return (NEXT, nodeid)


def joined_nodeids(nodeids: Iterable[str]) -> str:
    """Nodeids as one string (RUN, READY's ``nodeids``), not a list: execnet serializes a
    list item by item in Python, on both sides of the path to the first test. No nodeid holds
    a NUL: a path cannot, and pytest escapes parameter ids."""
    return "\0".join(nodeids)


def split_nodeids(text: str) -> list[str]:
    """``joined_nodeids`` read back, in order."""
    return text.split("\0") if text else []


def drain() -> Message:
    return (DRAIN, None)


def cancel() -> Message:
    return (CANCEL, None)


def steal(count: int) -> Message:
    return (STEAL, count)


def collect(payload: CollectPayload) -> Message:
    return (COLLECT, payload)


def shutdown() -> Message:
    return (SHUTDOWN, None)


def end_lease() -> Message:
    return (END_LEASE, None)


# -- builders: replica -> controller ------------------------------------------------------


def ready(
    *,
    pid: int,
    nodeids: list[str],
    collect_errors: list[str],
    setup_seconds: float,
    prewarm_errors: list[str],
    tests_run: int,
    changed_files: list[str],
    lease: str = "",
    reload: ReloadPayload | None = None,
    collection_differs: str | None = None,
    digests: str | None = None,
) -> Message:
    payload: ReadyPayload = {
        "pid": pid,
        "nodeids": joined_nodeids(nodeids),
        "collect_errors": collect_errors,
        "setup_seconds": setup_seconds,
        "prewarm_errors": prewarm_errors,
        "tests_run": tests_run,
        "changed_files": changed_files,
        "lease": lease,
    }
    if reload is not None:
        payload["reload"] = reload
    if collection_differs is not None:
        payload["collection_differs"] = collection_differs
    if digests is not None:
        payload["digests"] = digests
    return (READY, payload)


def start_failed(pid: int, traceback: str) -> Message:
    payload: FailurePayload = {"pid": pid, "traceback": traceback}
    return (START_FAILED, payload)


def started(nodeid: str, lease: str = "") -> Message:
    payload: NodeidPayload = {"nodeid": nodeid, "lease": lease}
    return (STARTED, payload)


def logstart(
    nodeid: str, location: tuple[str, int | None, str], lease: str = "", elapsed: float = 0.0
) -> Message:
    payload: LogPayload = {"nodeid": nodeid, "location": location, "lease": lease}
    if elapsed:
        payload["elapsed"] = elapsed
    return (LOGSTART, payload)


#: ``test_done``'s encoder, made once (``json.dumps`` with an argument makes one a call).
_ENCODE: Final = json.JSONEncoder(default=repr).encode


def test_done(
    nodeid: str,
    lease: str,
    warm: bool,
    events: list[list[Any]],
    location: tuple[str, int | None, str] | None = None,  # noqa: PT028 (not a test)
) -> Message:
    """TEST, its payload as JSON text: the message every test sends, and json's C encoder and
    decoder take a few microseconds where execnet's serializer walks each object in Python
    (``test_payload`` reads it back). ``location``: the item's, as the replica computed it
    for its own reports (the controller would compute the same again)."""
    fields: list[Any] = [nodeid, lease, warm, events]
    if location is not None:
        fields.append(location)
    return (TEST, _ENCODE(fields))


def test_payload(raw: str | TestPayload) -> TestPayload:
    """A TEST's payload, from its JSON text (``test_done``), with a warning's location a tuple
    again as pytest gives it."""
    if not isinstance(raw, str):
        return raw
    nodeid, lease, warm, events, *rest = json.loads(raw)
    for event in events:
        if event[0] == WARNING and isinstance(event[1].get("location"), list):
            event[1]["location"] = tuple(event[1]["location"])
    payload: TestPayload = {"nodeid": nodeid, "lease": lease, "warm": warm, "events": events}
    if rest and isinstance(rest[0], list) and len(rest[0]) == 3:
        payload["location"] = (rest[0][0], rest[0][1], rest[0][2])
    return payload


def tests(lines: str) -> Message:
    """TESTS: held TEST payloads, ``held_line`` each (what the held file holds)."""
    return (TESTS, lines)


def held_line(ended: float, text: str) -> str:
    """One held TEST (``test_done``'s JSON text, which has no newline) and when its test
    ended: a line of the held file and of a TESTS message."""
    return f"{ended!r} {text}\n"


def _held_entry(line: str) -> tuple[float, str]:
    """A ``held_line`` read back: (ended, TEST payload); ValueError when it is no such line."""
    ended, _, text = line.partition(" ")
    return float(ended), text


def tests_entries(lines: str) -> list[tuple[float, str]]:
    """A TESTS message's (ended, TEST payload) pairs, in order."""
    return [_held_entry(line) for line in lines.splitlines()]


def held_path(log_path: str) -> str:
    """The file beside a replica's log where it writes the TESTs it holds back."""
    return f"{log_path}.held"


def read_held(file: IO[bytes]) -> list[tuple[float, str]]:
    """The TEST payloads a replica wrote to its held file and may not have sent, each with
    when its test ended: a line each, ``<time.monotonic()> <JSON text>`` (a last line cut
    short by its death is left out); ``file`` is read from its start."""
    try:
        file.seek(0)
        lines = file.read().decode("utf-8", "replace").splitlines()
    except (OSError, ValueError):
        return []
    entries = []
    for line in lines:
        try:
            ended, text = _held_entry(line)
            json.loads(text)  # a line its death cut short is not a whole payload
        except ValueError:
            continue
        entries.append((ended, text))
    return entries


def compact_report(event: list[Any], nodeid: str, warm: bool, lease: str) -> Message:
    """A TEST's compact event as a REPORT of its own (the test was announced)."""
    return (REPORT, [*event, nodeid, warm, lease])


def report(data: dict[str, Any]) -> Message:
    """A serialized report (``pytest_report_to_serializable`` plus the REPORT_* keys)."""
    return (REPORT, encode_report(data))


def encoded_report(text: str) -> Message:
    """A report already encoded (and cut to fit) by the replica."""
    return (REPORT, text)


def logfinish(nodeid: str, location: tuple[str, int | None, str], lease: str = "") -> Message:
    payload: LogPayload = {"nodeid": nodeid, "location": location, "lease": lease}
    return (LOGFINISH, payload)


def warning(
    *,
    message: str,
    category_module: str,
    category_name: str,
    filename: str,
    lineno: int,
    nodeid: str,
    location: tuple[str, int, str] | None,
    lease: str = "",
) -> Message:
    payload: WarningPayload = {
        "message": message,
        "category_module": category_module,
        "category_name": category_name,
        "filename": filename,
        "lineno": lineno,
        "nodeid": nodeid,
        "location": location,
        "lease": lease,
    }
    return (WARNING, payload)


def unknown_nodeid(nodeid: str, lease: str = "") -> Message:
    payload: NodeidPayload = {"nodeid": nodeid, "lease": lease}
    return (UNKNOWN_NODEID, payload)


def teardown_error(pid: int, traceback: str) -> Message:
    payload: FailurePayload = {"pid": pid, "traceback": traceback}
    return (TEARDOWN_ERROR, payload)


def recycle(payload: RecyclePayload) -> Message:
    return (RECYCLE, payload)


def returned(nodeids: Iterable[str]) -> Message:
    return (RETURNED, list(nodeids))


def stopped_early(payload: StoppedEarlyPayload) -> Message:
    return (STOPPED_EARLY, payload)


def workeroutput(output: dict[str, Any]) -> Message:
    return (WORKEROUTPUT, output)


def finished(tests_run: int, exit_code: int | None = None) -> Message:
    payload: FinishedPayload = {"tests_run": tests_run, "exit_code": exit_code}
    return (FINISHED, payload)


def encode_report(data: dict[str, Any]) -> str:
    """A serialized report as JSON text: pytest makes it JSON-ready, and json's C encoder is
    several times faster than execnet's pure-Python serializer on these dicts (a test sends
    three of them). Anything json cannot encode becomes its repr rather than an error."""
    return json.dumps(data, default=repr)


def decode_report(payload: str | dict[str, Any]) -> dict[str, Any]:
    """The report dict again, with the tuples JSON turned into lists restored (pytest checks
    some: junitxml asserts a skip's ``longrepr`` is a ``(path, lineno, reason)`` tuple)."""
    data: dict[str, Any] = json.loads(payload) if isinstance(payload, str) else payload
    for key in ("location", "longrepr"):
        if isinstance(data.get(key), list):
            data[key] = tuple(data[key])
    for key in ("sections", "user_properties"):
        if isinstance(data.get(key), list):
            data[key] = [tuple(entry) if isinstance(entry, list) else entry for entry in data[key]]
    return data
