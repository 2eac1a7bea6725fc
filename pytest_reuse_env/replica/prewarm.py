"""Pre-warming (``reuse_prewarm``): session fixtures set up before the first test arrives.

Runs inside a replica, on its main thread, once collection is done and before READY is sent.
Imports only the standard library, pytest and the replica's log file.
"""

from __future__ import annotations

import traceback
import warnings
from typing import Final

import pytest

from pytest_reuse_env.replica.logfile import _log_line

#: pytest's deprecation warning for getfixturevalue on an item that is not set up.
_TEARDOWN_LOOKUP_WARNING: Final = r"Calling request\.getfixturevalue\(.*\) during teardown"


def _fixturenames(item: pytest.Item) -> list[str]:
    names: list[str] = getattr(item, "fixturenames", [])
    return names


def prewarm(session: pytest.Session, items: dict[str, pytest.Item], names: list[str]) -> list[str]:
    """Set up the named session fixtures now, before any test arrives.

    The fixture is requested through an item that uses it, with only the session on the
    setup stack, so it is cached and finalized at session scope exactly as if that item had
    requested it. A fixture that fails stays failed in its cache: the first test that uses
    it reports the error, as plain pytest would.
    """
    errors: list[str] = []
    for name in names:
        item = next((i for i in items.values() if name in _fixturenames(i)), None)
        if item is None:
            errors.append(f"prewarm fixture {name!r} is not used by any collected test")
            continue
        session._setupstate.setup(session)  # type: ignore[arg-type]
        # The log's last line is what the controller shows while this replica starts.
        _log_line(f"setting up prewarm fixture {name!r} (reuse_prewarm)")
        try:
            with warnings.catch_warnings():
                # The item is not set up, which pytest 9 takes for "during teardown" and
                # warns of (an error under filterwarnings = error); a session fixture's
                # node is on the setup stack, so the request is sound (pytest 10 too).
                warnings.filterwarnings("ignore", message=_TEARDOWN_LOOKUP_WARNING)
                item._request.getfixturevalue(name)  # type: ignore[attr-defined]
        except Exception:  # reported again by the first test that uses it
            errors.append(f"prewarm fixture {name!r} failed:\n{traceback.format_exc()}")
        finally:
            item._initrequest()  # type: ignore[attr-defined]
    return errors
