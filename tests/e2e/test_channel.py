"""The replica's socket: strangers never keep a real client out, each refusal is logged once,
and a client that fails holds no socket afterwards.

Real Unix sockets in a temporary directory, no processes: the listener's ``accept`` runs on a
thread with a bounded join; every wait has a deadline of a few seconds at most.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import execnet
import pytest

from pytest_reuse_env.channel import (
    AUTH_OK,
    AUTH_REFUSED,
    ChannelClosed,
    Listener,
    SocketChannel,
    connect,
)

TOKEN = "a" * 64
JOIN_SECONDS = 10.0


@pytest.fixture
def socket_path() -> Iterator[str]:
    # A short directory: pytest's tmp_path can exceed sun_path's 107 bytes.
    directory = tempfile.mkdtemp(prefix="ch", dir="/tmp")
    try:
        yield os.path.join(directory, "s.sock")
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def listener(socket_path: str, log: list[str]) -> Iterator[Listener]:
    server = Listener(socket_path, TOKEN, log=log.append, auth_deadline=0.5, max_pending=8)
    try:
        yield server
    finally:
        server.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def idle_stranger(path: str) -> socket.socket:
    """A connection that never sends anything (as in the issue's four idle connections)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def accept_on_thread(listener: Listener, timeout: float) -> tuple[threading.Thread, list[object]]:
    found: list[object] = []
    thread = threading.Thread(target=lambda: found.append(listener.accept(timeout)), daemon=True)
    thread.start()
    return thread, found


def test_idle_strangers_never_keep_a_real_client_out(listener: Listener, log: list[str]) -> None:
    strangers = [idle_stranger(listener.path) for _ in range(4)]
    try:
        thread, found = accept_on_thread(listener, timeout=5.0)
        started = time.monotonic()
        client = connect(listener.path, TOKEN, timeout=2.0)
        took = time.monotonic() - started
        thread.join(JOIN_SECONDS)
        assert not thread.is_alive()
        assert isinstance(found[0], SocketChannel)
        assert took < 1.0, f"the real client waited {took:.2f} s behind idle strangers"
        client.send("hello")
        assert found[0].receive(timeout=2.0) == "hello"
        client.close()
        found[0].close()
        # The strangers are refused once their deadline passes, each logged once.
        assert listener.accept(timeout=1.0) is None
        assert listener.pending == 0
        assert len(log) == 4, log
        assert all("no token within 0.5 s of connecting" in line for line in log)
        for stranger in strangers:
            # Refused: told so, then end of file.
            assert SocketChannel(stranger).receive(timeout=2.0) == AUTH_REFUSED
            stranger.settimeout(2.0)
            assert stranger.recv(1 << 10) == b""
    finally:
        for stranger in strangers:
            stranger.close()


def test_strangers_past_the_bound_refuse_the_oldest(listener: Listener, log: list[str]) -> None:
    strangers = [idle_stranger(listener.path) for _ in range(10)]
    try:
        assert listener.accept(timeout=0.2) is None
        assert listener.pending == 8
        assert len(log) == 2
        assert all("over 8 connections waiting to authenticate" in line for line in log)
        # The bound refuses the oldest: a real client arriving now still gets in.
        thread, found = accept_on_thread(listener, timeout=5.0)
        connect(listener.path, TOKEN, timeout=2.0).close()
        thread.join(JOIN_SECONDS)
        assert isinstance(found[0], SocketChannel)
        found[0].close()
    finally:
        for stranger in strangers:
            stranger.close()


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (execnet.dumps("b" * 64), "wrong token"),
        (b"\x00\x00\x00\x05hello", "first frame is not a token"),
        (b"\xff\xff\xff\xff", "first frame of 4294967295 bytes is not a token"),
        (b"", "closed without authenticating"),
    ],
)
def test_each_refusal_is_logged_once(
    listener: Listener, log: list[str], first: bytes, reason: str
) -> None:
    with idle_stranger(listener.path) as sock:
        if first and not first.startswith((b"\x00\x00\x00\x05", b"\xff")):
            first = len(first).to_bytes(4, "big") + first
        if first:
            sock.sendall(first)
        else:
            sock.shutdown(socket.SHUT_WR)
        assert listener.accept(timeout=0.3) is None
        assert listener.accept(timeout=0.3) is None
    assert len(log) == 1, log
    assert reason in log[0]
    assert f"pid {os.getpid()}" in log[0]
    assert listener.refused == 1


def test_a_refused_client_is_told_and_holds_nothing(listener: Listener) -> None:
    before = open_fds()
    thread, found = accept_on_thread(listener, timeout=2.0)
    with pytest.raises(ChannelClosed, match=AUTH_REFUSED):
        connect(listener.path, "b" * 64, timeout=2.0)
    thread.join(JOIN_SECONDS)
    assert found == [None]
    assert open_fds() == before


def test_a_client_that_gets_no_answer_closes_its_socket(socket_path: str) -> None:
    # A listener that never answers (hung, or not ours): the client times out, holding nothing.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(socket_path)
        server.listen(1)
        before = open_fds()
        with pytest.raises(TimeoutError):
            connect(socket_path, TOKEN, timeout=0.2)
        assert open_fds() == before


def test_a_real_client_is_admitted(listener: Listener, log: list[str]) -> None:
    thread, found = accept_on_thread(listener, timeout=2.0)
    client = connect(listener.path, TOKEN, timeout=2.0)
    thread.join(JOIN_SECONDS)
    server = found[0]
    assert isinstance(server, SocketChannel)
    server.send(AUTH_OK)
    assert client.receive(timeout=2.0) == AUTH_OK
    client.close()
    server.close()
    assert log == []
    assert Path(listener.path).exists()
