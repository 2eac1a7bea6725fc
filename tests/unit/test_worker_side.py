"""A replica as other plugins see it (replica/worker.py): pytest-rerunfailures' connection."""

from __future__ import annotations

import socket
import types
from typing import Any

from pytest_reuse_env.replica import worker


def test_rerunfailures_status_connection_sends_without_delay() -> None:
    # Its worker side sends a "set" the server does not answer, then a "get": with Nagle's
    # algorithm each test waited 40 ms for an acknowledgement.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        config: Any = types.SimpleNamespace(failures_db=types.SimpleNamespace(sock=sock))
        worker._rerunfailures_nodelay(config)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    nothing: Any = types.SimpleNamespace()
    worker._rerunfailures_nodelay(nothing)  # no rerunfailures: nothing to do
